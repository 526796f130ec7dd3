"""lazy_decode_attention: the Triton op and the CPU path against the reference, and the reference against the
two passes and their merge that it replaces."""

import pytest
import torch

from minilazy.kernels.cpu import CpuOps, decode
from minilazy.kernels.decode_attention import decode_attention_ref
from minilazy.kernels.lazy_decode_attention import lazy_decode_attention, lazy_decode_attention_ref
from minilazy.kernels.merge_attention import merge_attention_ref
from tests.helpers import TOLERANCES, assert_close
from tests.kernels.test_attention import head_major, int32

# name: (B, H, G, d, kv_len, image layout, n_img); image layout "span": image tokens at slots 3..3+n_img-1,
# "scattered": every third slot (FastV's kept tokens), "all": every slot (no text key), "none": a text-only
# row. 150 keys span three splits when interpreting.
CASES = {
    "gqa_span_ragged": (3, 6, 2, 32, [150, 40, 9], "span", [130, 20, 0]),
    "mha_scattered_odd_d": (2, 4, 4, 24, [100, 61], "scattered", [33, 20]),
    "one_kv_head_text_only": (2, 8, 1, 16, [70, 5], "none", [0, 0]),
    "gqa_empty_row": (2, 6, 3, 32, [90, 0], "span", [70, 0]),  # the second sequence has no key: o = 0
    "mha_image_only": (2, 4, 4, 16, [70, 33], "all", [70, 33]),
}

# GPU-sized: a decode batch of 64 with about 4,100 keys, 4,096 of them image keys; only with --device cuda
GPU_CASES = {
    "gpu_batch64_image4096": (64, 9, 3, 64, [4160] * 62 + [1, 2000], "span", [4096] * 62 + [0, 1500]),
}


def make_case(name, dtype=torch.float32, with_offset=True):
    """(args, kwargs) of the op: each sequence's first kv_len slots split into image and text keys; the image
    logits are an anchor's (`anchor_case`) and NaN at every other slot, which the op must not read."""
    anchor_q, anchor_k, args, kwargs = anchor_case(name, dtype, with_offset)
    image_logits, n_img, image_slots = args[3:6]
    is_image = torch.zeros(image_logits.shape[0], image_logits.shape[2], dtype=torch.bool)  # [B, S]
    for b, n in enumerate(n_img.tolist()):
        is_image[b, image_slots[b, :n].long()] = True
    image_logits.masked_fill_(~is_image[:, None, :], float("nan"))
    return args, kwargs


def anchor_case(name, dtype=torch.float32, with_offset=True):
    """An anchor's query and keys `(q_a [B, H, d], k_a [B, S, G, d])` and the op's arguments, whose image logits
    `[B, H, S]` are the ones the anchor's decode step writes over its keys (NaN past kv_len)."""
    batch, n_heads, n_kv, head_dim, kv_len, layout, n_img = CASES[name] if name in CASES else GPU_CASES[name]
    n_slots = max(kv_len) + 7
    image_rows, text_rows = [], []
    for length, n_image in zip(kv_len, n_img):
        step = 1 if layout == "all" else 3
        image = list(range(3, 3 + n_image)) if layout == "span" else list(range(0, length, step))[:n_image]
        image_rows.append(image)
        text_rows.append([s for s in range(length) if s not in set(image)])
    width, capacity = max(1, max(map(len, image_rows))), max(1, max(map(len, text_rows))) + 5
    image_slots = torch.tensor([r + [-1] * (width - len(r)) for r in image_rows], dtype=torch.int32)
    text_slots = torch.tensor([r + [-1] * (capacity - len(r)) for r in text_rows], dtype=torch.int32)
    scale = head_dim**-0.5
    anchor_q, anchor_k = torch.randn(batch, n_heads, head_dim), head_major(torch.randn(batch, n_slots, n_kv, head_dim))
    image_logits = torch.full((batch, n_heads, n_slots), float("nan"))
    decode_attention_ref(anchor_q, anchor_k, anchor_k, int32(kv_len), scale=scale, logits_out=image_logits)
    q = torch.randn(batch, n_heads, head_dim).to(dtype)
    k_text = head_major(torch.randn(batch, capacity, n_kv, head_dim)).to(dtype)
    v_cache = head_major(torch.randn(batch, n_slots, n_kv, head_dim)).to(dtype)
    args = [q, k_text, v_cache, image_logits, int32(list(map(len, image_rows))), image_slots,
            int32(list(map(len, text_rows))), text_slots]
    offset = torch.randn(n_heads) if with_offset else None
    return anchor_q, anchor_k, args, dict(scale=scale, offset=offset)


def fp32(args):
    return [t.float() if t.is_floating_point() else t for t in args]


@pytest.mark.parametrize("with_offset", [False, True], ids=["plain", "offset"])
@pytest.mark.parametrize("dtype, atol, rtol", TOLERANCES)
@pytest.mark.parametrize("name", list(CASES))
def test_kernel_matches_reference(name, dtype, atol, rtol, with_offset):
    args, kwargs = make_case(name, dtype, with_offset)
    o = lazy_decode_attention(*args, **kwargs)
    expected = lazy_decode_attention_ref(*fp32(args), **kwargs)
    assert o.dtype == dtype
    assert_close(o, expected, atol, rtol, what="o")


@pytest.mark.gpu_sized
@pytest.mark.parametrize("dtype, atol, rtol", TOLERANCES)
@pytest.mark.parametrize("name", list(GPU_CASES))
def test_kernel_matches_reference_gpu_sized(name, dtype, atol, rtol):
    test_kernel_matches_reference(name, dtype, atol, rtol, with_offset=True)


@pytest.mark.parametrize("op", [lazy_decode_attention, CpuOps().lazy_decode_attention], ids=["triton", "cpu"])
def test_a_large_offset_without_image_keys_leaves_the_text_part_whole(op):
    """Sequences with no image key weigh their text keys alone, whatever the offset of the (absent) image part."""
    args, kwargs = make_case("one_kv_head_text_only")
    offset = torch.full_like(kwargs["offset"], 200.0)  # far above every text logit
    o = op(*args, scale=kwargs["scale"], offset=offset)
    assert torch.isfinite(o).all()
    assert_close(o, lazy_decode_attention_ref(*args, scale=kwargs["scale"], offset=None), 1e-5, 1e-5, what="o")


@pytest.mark.parametrize("with_offset", [False, True], ids=["plain", "offset"])
@pytest.mark.parametrize("name", list(CASES))
def test_cpu_path_matches_reference(name, with_offset):
    args, kwargs = make_case(name, with_offset=with_offset)
    assert_close(CpuOps().lazy_decode_attention(*args, **kwargs), lazy_decode_attention_ref(*args, **kwargs),
                 1e-5, 1e-5, what="o")


@pytest.mark.parametrize("with_offset", [False, True], ids=["plain", "offset"])
@pytest.mark.parametrize("name", list(CASES))
def test_reference_equals_two_passes_merged(name, with_offset):
    """The anchor's query over its image keys and the layer's own query over its text keys, merged by
    log-sum-exp with the offset on the first: the two passes the op replaces."""
    anchor_q, anchor_k, args, kwargs = anchor_case(name, with_offset=with_offset)
    q, k_text, v_cache, _, n_img, image_slots, n_text, text_slots = args
    scale = kwargs["scale"]
    o_img, lse_img = decode_attention_ref(anchor_q, anchor_k, v_cache, n_img, scale=scale, key_slots=image_slots)
    o_txt, lse_txt = decode_attention_ref(q, k_text, v_cache, n_text, scale=scale, key_slots=text_slots,
                                          k_compact=True)
    merged = merge_attention_ref(o_img, lse_img, o_txt, lse_txt, kwargs["offset"])
    o = lazy_decode_attention_ref(*args, **kwargs)
    assert_close(o, merged, 1e-5, 1e-5, what="o")
    if name == "gqa_empty_row":
        assert (o[1] == 0).all()


@pytest.mark.parametrize("name", ["mha_scattered_odd_d", "gqa_span_ragged"])  # the second: a row without image keys
@pytest.mark.parametrize("run_mode, logits_mode", [(False, False), (True, False), (True, True)],
                         ids=["normal", "normal logits in inference mode", "inference"])
def test_cpu_path_weighs_the_image_logits_once_per_rewrite(run_mode, logits_mode, monkeypatch, name):
    """The lazy layers of one anchor (each with its own query, text keys and offset; one whose text logits stand
    far above the image peak) share one softmax of its image logits, each writing its text weights over the last
    one's; the anchor's rewrite in place is seen. Generation runs in inference mode on logits allocated as a
    normal tensor (LazyState); an inference tensor has no version counter and is never remembered."""
    calls = []
    image_weights = decode.image_weights
    monkeypatch.setattr(decode, "image_weights", lambda *a: calls.append(1) or image_weights(*a))
    args, kwargs = make_case(name)
    with torch.inference_mode(logits_mode):
        args[3] = args[3].clone()
    ops = CpuOps()
    q, k_text = args[:2]
    layers = [(q, k_text, kwargs["offset"]), (100 * torch.randn_like(q), torch.randn_like(k_text), None),
              (torch.randn_like(q), torch.randn_like(k_text), -kwargs["offset"]), (q, k_text, kwargs["offset"])]
    with torch.inference_mode(run_mode):
        for q, k_text, offset in layers:
            layer = [q, k_text, *args[2:]]
            assert_close(ops.lazy_decode_attention(*layer, scale=kwargs["scale"], offset=offset),
                         lazy_decode_attention_ref(*layer, scale=kwargs["scale"], offset=offset), 1e-5, 1e-5, what="o")
        assert len(calls) == (4 if logits_mode else 1)
        args[3].mul_(-1)  # the anchor's next step, in place: its version counter moves
        o = ops.lazy_decode_attention(*args, **kwargs)
    assert_close(o, lazy_decode_attention_ref(*args, **kwargs), 1e-5, 1e-5, what="o after the rewrite")


def test_cpu_path_rescales_text_logits_far_above_the_image_peak(monkeypatch):
    """Text logits ~200 above the image peak: weighted relative to the image peak, they would overflow fp32."""
    args, kwargs = make_case("mha_scattered_odd_d")  # every sequence has image keys
    args[0] = 100 * args[0]
    expected = lazy_decode_attention_ref(*args, **kwargs)
    assert_close(CpuOps().lazy_decode_attention(*args, **kwargs), expected, 1e-5, 1e-5, what="o")
    monkeypatch.setattr(decode, "TEXT_HEADROOM", float("inf"))  # never rescale
    assert not torch.isfinite(CpuOps().lazy_decode_attention(*args, **kwargs)).all()


def test_rejects_bad_arguments():
    args, kwargs = make_case("gqa_span_ragged")
    op = lazy_decode_attention
    with pytest.raises(ValueError, match="offset"):
        op(*args, scale=kwargs["scale"], offset=torch.zeros(5))
    bad = list(args)
    bad[3] = args[3][:, :-1].contiguous()  # one head short
    with pytest.raises(ValueError, match="image_logits"):
        op(*bad, **kwargs)
    bad = list(args)
    bad[6] = args[6].long()
    with pytest.raises(ValueError, match="n_text"):
        op(*bad, **kwargs)
