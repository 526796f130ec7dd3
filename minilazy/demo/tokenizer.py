"""The demo model's word-level tokenizer, trained with `tokenizers` on the generated text.

Pipeline: "\\n" becomes a space; punctuation (`? . , : ;`) is split off; spaces become "▁" and
start the word that follows (Metaspace, never prepended), so "ASSISTANT: red circle" is
`ASSISTANT`, `:`, `▁red`, `▁circle`. Each piece is a token of a WordLevel vocabulary. The
post-processor adds `<s>` in front (as LLaVA's Llama tokenizer does); the decoder turns "▁" back
into spaces and drops the first one, so an answer decodes to clean text ("red circle").
Because "▁" only ever comes from a real space, encoding pieces one after the other gives the
same ids as encoding their concatenation, which is how training sequences are built.
"""

from __future__ import annotations

import re
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from minilazy.config import write_json

BOS, EOS, PAD, UNK, IMAGE = "<s>", "</s>", "<pad>", "<unk>", "<image>"
SPECIAL_TOKENS = [UNK, BOS, EOS, PAD, IMAGE]


def build_tokenizer(corpus: list[str]) -> Tokenizer:
    """Train a WordLevel tokenizer on `corpus`; every piece seen at least once gets an id."""
    tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
    tokenizer.normalizer = normalizers.Replace("\n", " ")
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"[?.,:;]"), behavior="isolated"),
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True),
    ])
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    trainer = trainers.WordLevelTrainer(vocab_size=10_000, min_frequency=1, special_tokens=SPECIAL_TOKENS)
    # Encoding splits the text at special tokens before pre-tokenizing; the trainer does not, so split here.
    special = re.compile("|".join(re.escape(token) for token in SPECIAL_TOKENS))
    tokenizer.train_from_iterator((piece for text in corpus for piece in special.split(text) if piece), trainer)
    bos_id = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, out_dir: str | Path, model_max_length: int) -> None:
    """Write tokenizer.json plus the config files transformers' PreTrainedTokenizerFast reads."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": UNK, "pad_token": PAD}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "add_bos_token": True,
        "add_eos_token": False,
        "model_max_length": model_max_length,
        "padding_side": "left",
        "clean_up_tokenization_spaces": False,
        "extra_special_tokens": {"image_token": IMAGE},
    }
    write_json(out_dir / "tokenizer_config.json", config)
    write_json(out_dir / "special_tokens_map.json", {**special, "additional_special_tokens": [IMAGE]})
