"""rope: the Triton kernel against its reference, and the reference against transformers' Llama RoPE and
Qwen2-VL's multimodal (decoder) and axial (vision tower) RoPE."""

import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb
from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLTextConfig, Qwen2VLVisionConfig
from transformers.models.qwen2_vl.modeling_qwen2_vl import (
    Qwen2VLRotaryEmbedding, Qwen2VLVisionRotaryEmbedding, apply_rotary_pos_emb_vision,
)

from minilazy.kernels.rope import rope, rope_ref
from tests.helpers import TOLERANCES, assert_close

SHAPES = [(1, 1, 3, 16), (2, 5, 9, 64), (1, 37, 3, 64)]  # (B, T, heads, head_dim)
# (head_dim, sections, axial): multimodal RoPE (t, h, w), an uneven split, and the vision tower's (h, w).
AXES = [(16, (2, 3, 3), False), (64, (8, 12, 12), False), (80, (20, 20), True), (24, (5, 7), True)]


def _positions(B, T, most=4000):
    return torch.randint(0, most, (B, T))


def _hf_rope(x, positions, theta):
    """transformers' rotary embedding of x [B, T, H, d] (heads on dim 2, hence unsqueeze_dim=2)."""
    H, d = x.shape[2], x.shape[3]
    config = LlamaConfig(hidden_size=H * d, num_attention_heads=H, head_dim=d, rope_theta=theta)
    cos, sin = LlamaRotaryEmbedding(config)(x, positions)
    q_embed, _ = apply_rotary_pos_emb(x, x, cos, sin, unsqueeze_dim=2)
    return q_embed, cos, sin


@pytest.mark.parametrize("dtype,atol,rtol", TOLERANCES)
@pytest.mark.parametrize("shape", SHAPES)
def test_rope_kernel_matches_reference(shape, dtype, atol, rtol):
    B, T, H, d = shape
    x = torch.randn(B, T, H, d).to(dtype)
    positions = _positions(B, T).to(torch.int32)
    assert_close(rope(x, positions, 10000.0), rope_ref(x, positions, 10000.0), atol, rtol, "rope")


@pytest.mark.parametrize("dtype,atol,rtol", TOLERANCES)
@pytest.mark.parametrize("d,sections,axial", AXES)
def test_rope_kernel_on_several_axes_matches_reference(d, sections, axial, dtype, atol, rtol):
    B, T, H = 2, 7, 3
    x = torch.randn(B, T, H, d).to(dtype)
    positions = torch.randint(0, 4000, (B, T, len(sections))).to(torch.int32)
    expected = rope_ref(x, positions, 10000.0, sections=sections, axial=axial)
    assert_close(rope(x, positions, 10000.0, sections=sections, axial=axial), expected, atol, rtol, "rope")


def test_rope_on_one_axis_is_plain_rope():
    x, positions = torch.randn(2, 5, 3, 16), _positions(2, 5)
    on_axes = rope_ref(x, positions[..., None], 10000.0, sections=(8,))
    assert torch.equal(on_axes, rope_ref(x, positions, 10000.0))
    assert_close(rope(x, positions[..., None], 10000.0, sections=(8,)), on_axes, 1e-5, 1e-5, "rope")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_reference_equals_qwen2_vl_multimodal_rope(dtype):
    B, T, H, d, sections = 2, 19, 3, 32, (4, 6, 6)
    config = Qwen2VLTextConfig(hidden_size=H * d, num_attention_heads=H, head_dim=d,
                               rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": list(sections)})
    x = torch.randn(B, T, H, d).to(dtype)
    positions = torch.randint(0, 3000, (B, T, 3))
    cos, sin = Qwen2VLRotaryEmbedding(config)(x, positions.permute(2, 0, 1))  # HF takes [3, B, T]
    expected, _ = apply_rotary_pos_emb(x, x, cos, sin, unsqueeze_dim=2)
    actual = rope_ref(x, positions, 1e6, sections=sections)
    assert torch.equal(actual, expected), f"max diff {(actual.float() - expected.float()).abs().max()}"


def test_rope_reference_equals_qwen2_vl_vision_rope_fp32():
    N, H, d = 23, 4, 40
    config = Qwen2VLVisionConfig(embed_dim=H * d, num_heads=H)
    x = torch.randn(N, H, d)
    positions = torch.randint(0, 60, (N, 2))  # (h, w) of each patch
    cos, sin = Qwen2VLVisionRotaryEmbedding(config)(x, positions)
    expected, _ = apply_rotary_pos_emb_vision(x, x, cos, sin)
    actual = rope_ref(x[None], positions[None], 10000.0, sections=(d // 4, d // 4), axial=True)[0]
    assert_close(actual, expected, 1e-6, 0, "vision rope")


def test_rope_kernel_cos_sin_match_transformers_fp32():
    # x = [1, 0] per head makes the output [cos, sin]: the kernel's angles at positions up to 4000.
    B, T, H, d = 2, 37, 1, 64
    x = torch.cat((torch.ones(B, T, H, d // 2), torch.zeros(B, T, H, d // 2)), dim=-1)
    positions = _positions(B, T)
    _, cos, sin = _hf_rope(x, positions, 100000.0)
    out = rope(x, positions, 100000.0)
    assert_close(out[:, :, 0, : d // 2], cos[..., : d // 2], 1e-6, 0, "cos")
    assert_close(out[:, :, 0, d // 2 :], sin[..., : d // 2], 1e-6, 0, "sin")


def test_rope_strided_input_into_q_cache_slot_leaves_rest_untouched():
    B, T, H, G, d = 2, 5, 3, 1, 16
    qkv = torch.randn(B, T, (H + 2 * G) * d)
    q = qkv[..., : H * d].view(B, T, H, d)  # [B, T, H, d], row stride (H + 2G) * d
    q_cache = torch.full((3, 4, 8, H, d), 7.0)  # [R, B_max, T_max, H, d]
    before = q_cache.clone()
    slot = q_cache[1, :B, :T]  # [B, T, H, d], not contiguous
    positions = _positions(B, T)
    returned = rope(q, positions, 10000.0, out=slot)
    assert returned.data_ptr() == slot.data_ptr()
    assert_close(slot, rope_ref(q.contiguous(), positions, 10000.0), 1e-5, 1e-5, "rope into slot")
    untouched = torch.ones_like(q_cache, dtype=torch.bool)
    untouched[1, :B, :T] = False
    assert torch.equal(q_cache[untouched], before[untouched]), "rope wrote outside its out view"


@pytest.mark.parametrize("theta", [10000.0, 100000.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_rope_reference_equals_transformers(theta, dtype):
    B, T, H, d = 2, 37, 3, 64
    x = torch.randn(B, T, H, d).to(dtype)
    positions = _positions(B, T)
    expected, _, _ = _hf_rope(x, positions, theta)
    actual = rope_ref(x, positions, theta)
    assert actual.dtype == dtype
    assert torch.equal(actual, expected), f"max diff {(actual.float() - expected.float()).abs().max()}"


def test_rope_reference_gradient_is_inverse_rotation():
    # RoPE is a rotation, so the gradient of <rope(x, p), g> with respect to x is rope(g, -p).
    B, T, H, d = 1, 5, 3, 16
    x = torch.randn(B, T, H, d, requires_grad=True)
    g = torch.randn(B, T, H, d)
    positions = _positions(B, T, most=50)
    (rope_ref(x, positions, 10000.0) * g).sum().backward()
    assert_close(x.grad, rope_ref(g, -positions, 10000.0), 1e-5, 1e-5, "grad")


@pytest.mark.parametrize(
    "x_shape,pos_shape,pos_dtype,message",
    [
        ((2, 5, 3), (2, 5), torch.int64, "B, T, heads, head_dim"),
        ((2, 5, 3, 15), (2, 5), torch.int64, "even"),
        ((2, 5, 3, 16), (2, 4), torch.int64, "positions must be"),
        ((2, 5, 3, 16), (2, 5), torch.float32, "int32 or int64"),
    ],
)
def test_rope_rejects_bad_input(x_shape, pos_shape, pos_dtype, message):
    x = torch.randn(x_shape)
    positions = torch.zeros(pos_shape, dtype=pos_dtype)
    for fn in (rope, rope_ref):
        with pytest.raises(ValueError, match=message):
            fn(x, positions, 10000.0)


@pytest.mark.parametrize(
    "pos_shape,sections,message",
    [((2, 5), (2, 3, 3), "B, T, axes"), ((2, 5, 2), (2, 3, 3), "B, T, axes"), ((2, 5, 3), (2, 3, 4), "sum to"),
     ((2, 5, 3), (0, 4, 4), "positive")],
)
def test_rope_rejects_bad_sections(pos_shape, sections, message):
    x, positions = torch.randn(2, 5, 3, 16), torch.zeros(pos_shape, dtype=torch.int64)
    for fn in (rope, rope_ref):
        with pytest.raises(ValueError, match=message):
            fn(x, positions, 10000.0, sections=sections)


def test_rope_rejects_mismatched_out():
    x = torch.randn(1, 5, 3, 16)
    with pytest.raises(ValueError, match="out must match"):
        rope(x, torch.zeros(1, 5, dtype=torch.int64), 10000.0, out=torch.empty(1, 5, 3, 16, dtype=torch.float16))
