"""A `tokenizers` tokenizer (tokenizer.json) rebuilt from the vocabulary stored in a GGUF file.

Only GPT-2 style byte-level BPE (`tokenizer.ggml.model == "gpt2"`) is
supported: the GGUF file holds the byte-level token strings (`Ġ` for a space),
their types and the merge list, so the Hugging Face tokenizer is the BPE model
over those, with the byte-level pre-tokenizer and decoder.

Two details decide whether the result tokenizes like the original:
- `tokenizer.ggml.pre` names the pre-tokenizer regex. SmolLM/StarCoder
  vocabularies first split every digit on its own, then apply GPT-2's regex.
- Control tokens (`token_type == 3`, e.g. `<|im_start|>`) must be registered as
  special added tokens; otherwise BPE splits them into pieces and chat prompts
  go wrong. User-defined tokens (`token_type == 4`) are added as whole tokens.

Reference: llama.cpp `src/llama-vocab.cpp` (pre-tokenizer regexes per `pre` name).
"""

from __future__ import annotations

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

from minilazy.errors import InputError
from weights.gguf_tensors import gguf, metadata_value

# llama.cpp token types (gguf.TokenType).
CONTROL = int(gguf.TokenType.CONTROL)
USER_DEFINED = int(gguf.TokenType.USER_DEFINED)

# `tokenizer.ggml.pre` names whose regex splits single digits before GPT-2's regex.
_DIGIT_SPLIT_PRE = ("smollm", "starcoder", "refact", "codeshell")
# Names that use GPT-2's regex alone.
_GPT2_PRE = ("default", "gpt-2", "mpt", "olmo")


def _pre_tokenizer(pre: str) -> pre_tokenizers.PreTokenizer:
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in _GPT2_PRE:
        return byte_level
    if pre in _DIGIT_SPLIT_PRE:
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    raise InputError(
        f"unsupported GGUF pre-tokenizer {pre!r}; supported: {', '.join(_GPT2_PRE + _DIGIT_SPLIT_PRE)}"
    )


def tokenizer_from_gguf(reader: gguf.GGUFReader) -> Tokenizer:
    """The byte-level BPE tokenizer described by the GGUF metadata, special tokens registered."""
    kind = metadata_value(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise InputError(f"unsupported GGUF tokenizer model {kind!r}: only byte-level BPE ('gpt2') is supported")
    tokens = metadata_value(reader, "tokenizer.ggml.tokens")
    token_types = metadata_value(reader, "tokenizer.ggml.token_type", [int(gguf.TokenType.NORMAL)] * len(tokens))
    merges = metadata_value(reader, "tokenizer.ggml.merges")
    vocab = {token: token_id for token_id, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise InputError(f"the GGUF vocabulary has duplicate tokens ({len(tokens) - len(vocab)} of {len(tokens)})")
    # Byte-level tokens never contain a space (it is mapped to "Ġ"), so a merge splits at its one space.
    pairs = [tuple(merge.split(" ", 1)) for merge in merges]

    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, byte_fallback=False))
    tokenizer.pre_tokenizer = _pre_tokenizer(metadata_value(reader, "tokenizer.ggml.pre", "default"))
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.add_special_tokens([
        AddedToken(token, special=True, normalized=False)
        for token, token_type in zip(tokens, token_types) if token_type == CONTROL
    ])
    tokenizer.add_tokens([
        AddedToken(token, special=False, normalized=False)
        for token, token_type in zip(tokens, token_types) if token_type == USER_DEFINED
    ])
    return tokenizer


def special_token(reader: gguf.GGUFReader, tokenizer: Tokenizer, role: str) -> str | None:
    """The text of the `bos`/`eos`/`unknown`/`padding` token named in the metadata, or None."""
    token_id = metadata_value(reader, f"tokenizer.ggml.{role}_token_id", None)
    return None if token_id is None else tokenizer.id_to_token(token_id)
