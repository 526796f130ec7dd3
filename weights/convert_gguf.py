"""Convert a Llama GGUF file (llama.cpp's format) into a Hugging Face checkpoint directory.

    python -m weights.convert_gguf model.gguf out_dir [--dtype fp32|fp16|bf16]

writes `config.json`, `model.safetensors` (Hugging Face tensor names, weights
dequantised), `tokenizer.json`, `tokenizer_config.json` (with the chat template)
and `generation_config.json`. Every hyperparameter comes from the GGUF metadata.
The output head is omitted when the file has none (it is tied to the embedding).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from minilazy.kernels.backend import DTYPES
from minilazy.config import write_json
from minilazy.errors import InputError
from weights.gguf_tensors import dequantize_tensor, gguf, metadata_value, unpermute_qk
from weights.gguf_tokenizer import special_token, tokenizer_from_gguf


def config_dtype(dtype: str) -> str:
    """The name config.json gives a `--dtype` choice (`fp16` -> `float16`)."""
    return str(DTYPES[dtype]).removeprefix("torch.")

_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_LAYER_TENSOR = re.compile(r"blk\.(\d+)\.(\w+)\.weight")


def hf_name(gguf_name: str) -> str:
    """The Hugging Face name of a GGUF tensor (`blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`)."""
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    match = _LAYER_TENSOR.fullmatch(gguf_name)
    if match is None or match.group(2) not in _LAYER_NAMES:
        raise InputError(f"unexpected tensor {gguf_name!r} in the GGUF file: not part of a plain Llama model")
    return f"model.layers.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}.weight"


def config_from_gguf(reader: gguf.GGUFReader) -> dict:
    """A transformers `LlamaConfig` dict (config.json) from the GGUF metadata."""
    arch = metadata_value(reader, "general.architecture")
    if arch != "llama":
        raise InputError(f"unsupported GGUF architecture {arch!r}: only 'llama' models can be converted")

    def llama(key, *default):
        return metadata_value(reader, f"llama.{key}", *default)

    if llama("rope.scaling.type", "none") != "none" or "rope_freqs.weight" in (t.name for t in reader.tensors):
        raise InputError("the GGUF file uses RoPE scaling, which is not supported: only the default RoPE is")

    hidden = llama("embedding_length")
    heads = llama("attention.head_count")
    head_dim = llama("attention.key_length", hidden // heads)
    if llama("rope.dimension_count", head_dim) != head_dim:
        raise InputError(f"RoPE over {llama('rope.dimension_count')} of {head_dim} head dimensions "
                         "(partial rotary) is not supported")
    tied = all(t.name != "output.weight" for t in reader.tensors)
    rope_theta = float(llama("rope.freq_base", 10000.0))
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": llama("feed_forward_length"),
        "num_hidden_layers": llama("block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": llama("attention.head_count_kv", heads),
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": llama("context_length"),
        "rms_norm_eps": float(llama("attention.layer_norm_rms_epsilon")),
        "rope_theta": rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": rope_theta},
        "vocab_size": llama("vocab_size", len(metadata_value(reader, "tokenizer.ggml.tokens"))),
        "tie_word_embeddings": tied,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": metadata_value(reader, "tokenizer.ggml.bos_token_id", None),
        "eos_token_id": metadata_value(reader, "tokenizer.ggml.eos_token_id", None),
        "pad_token_id": metadata_value(reader, "tokenizer.ggml.padding_token_id", None),
    }


def convert_tensors(reader: gguf.GGUFReader, config: dict, dtype: torch.dtype, progress: bool = True) -> dict:
    """All weights under their Hugging Face names, dequantised to `dtype`, q/k rows un-permuted."""
    heads = {"q_proj": config["num_attention_heads"], "k_proj": config["num_key_value_heads"]}
    state = {}
    for tensor in tqdm(reader.tensors, desc="dequantising", unit="tensor", disable=not progress):
        name = hf_name(tensor.name)
        weight = dequantize_tensor(tensor)
        projection = name.split(".")[-2]
        if projection in heads:
            weight = unpermute_qk(weight, heads[projection])
        state[name] = weight.to(dtype).contiguous()
    expected = {"model.embed_tokens.weight", "model.norm.weight"} | {
        f"model.layers.{i}.{part}.weight" for i in range(config["num_hidden_layers"]) for part in _LAYER_NAMES.values()
    }
    if not config["tie_word_embeddings"]:
        expected.add("lm_head.weight")
    if missing := sorted(expected - state.keys()):
        raise InputError(f"the GGUF file lacks {len(missing)} tensors of a Llama model, e.g. {missing[:3]}")
    return state


def convert_gguf(gguf_path: str | Path, out_dir: str | Path, dtype: str = "fp32", progress: bool = True) -> Path:
    """Write the Hugging Face checkpoint of the Llama model in `gguf_path` into `out_dir`; returns `out_dir`."""
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if not gguf_path.is_file():
        raise InputError(f"GGUF file not found: {gguf_path}")
    try:
        reader = gguf.GGUFReader(gguf_path)
    except (ValueError, OSError) as e:
        raise InputError(f"{gguf_path} is not a readable GGUF file: {e}") from e
    config = config_from_gguf(reader)
    tokenizer = tokenizer_from_gguf(reader)
    state = convert_tensors(reader, config, DTYPES[dtype], progress)

    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(state, out_dir / "model.safetensors", metadata={"format": "pt"})
    write_json(out_dir / "config.json", {**config, "dtype": config_dtype(dtype)})
    tokenizer.save(str(out_dir / "tokenizer.json"))
    tokens = {role: special_token(reader, tokenizer, role) for role in ("bos", "eos", "unknown", "padding")}
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": tokens["bos"],
        "eos_token": tokens["eos"],
        "unk_token": tokens["unknown"],
        "pad_token": tokens["padding"],
        "add_bos_token": bool(metadata_value(reader, "tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(metadata_value(reader, "tokenizer.ggml.add_eos_token", False)),
        "clean_up_tokenization_spaces": False,
        "model_max_length": config["max_position_embeddings"],
    }
    if (template := metadata_value(reader, "tokenizer.chat_template", None)) is not None:
        tokenizer_config["chat_template"] = template
    write_json(out_dir / "tokenizer_config.json", tokenizer_config)
    generation = {key: config[key] for key in ("bos_token_id", "eos_token_id", "pad_token_id") if config[key] is not None}
    write_json(out_dir / "generation_config.json", generation)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m weights.convert_gguf",
        description="Convert a Llama GGUF file (llama.cpp format; F32, F16, Q4_0, Q4_1 or Q8_0 tensors) into a "
                    "Hugging Face checkpoint directory: config.json, model.safetensors, tokenizer.json, "
                    "tokenizer_config.json and generation_config.json.",
    )
    parser.add_argument("gguf_file", type=Path, help="the .gguf file to convert (architecture 'llama', "
                                                     "byte-level BPE tokenizer)")
    parser.add_argument("out_dir", type=Path, help="directory to write the checkpoint into (created if missing; "
                                                   "existing files of the same names are overwritten)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32",
                        help="floating-point type of the dequantised weights in model.safetensors (default: fp32)")
    parser.add_argument("--quiet", action="store_true", help="do not show the progress bar")
    args = parser.parse_args(argv)
    try:
        out_dir = convert_gguf(args.gguf_file, args.out_dir, args.dtype, progress=not args.quiet)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
