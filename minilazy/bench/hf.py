"""transformers' `generate` on the same checkpoint, inputs, dtype and token count: the reference speed.

The prompt embeddings are built from the same image features minilazy uses
(merged at the image-token positions), so both sides time the decoder only.
Prefill and decode are told apart by a logits processor that notes the time of
every call: the first call follows the prefill forward, each later one a decode step.
"""

from __future__ import annotations

import time

import torch

from minilazy.bench.measure import PeakMemory, synchronize
from minilazy.errors import InputError


def load_transformers_model(model_dir, dtype: torch.dtype, device: torch.device, with_vision: bool = True):
    """transformers' model of `model_dir`: the image-text-to-text class, or the causal LM of a text-only one."""
    try:
        from transformers import AutoModelForCausalLM, AutoModelForImageTextToText
    except ImportError:
        raise InputError("the comparison with transformers needs the transformers package "
                         "(pip install -e '.[test]'), or give --no-transformers") from None
    model_class = AutoModelForImageTextToText if with_vision else AutoModelForCausalLM
    return model_class.from_pretrained(str(model_dir), dtype=dtype).to(device).eval()


class _StepClock:
    """A logits processor that records when it is called and changes nothing."""

    def __init__(self, device: torch.device):
        self.device, self.times = device, []

    def __call__(self, input_ids, scores):
        synchronize(self.device)
        self.times.append(time.perf_counter())
        return scores


def cache_bytes(cache) -> int:
    """Bytes of keys and values held by a transformers cache (DynamicCache of any recent version)."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        tensors = [t for layer in layers for t in (getattr(layer, "keys", None), getattr(layer, "values", None))]
    else:
        tensors = [t for pair in cache for t in pair[:2]]
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


@torch.inference_mode()
def run_transformers(model, input_ids: list[int], image_features: torch.Tensor | None, image_token_id: int | None,
                     batch: int, new_tokens: int) -> dict:
    """One greedy `generate` of exactly `new_tokens` tokens for `batch` copies of the prompt."""
    from transformers import LogitsProcessorList

    device = next(model.parameters()).device
    ids = torch.tensor([input_ids] * batch, device=device)  # [B, T]
    clock = _StepClock(device)
    with PeakMemory(device) as peak:
        synchronize(device)
        start = time.perf_counter()
        embeds = model.get_input_embeddings()(ids)  # [B, T, D]
        if image_features is not None:
            mask = (ids == image_token_id)[..., None].expand_as(embeds)  # [B, T, D]
            features = image_features.to(embeds.dtype).repeat(batch, 1)  # [B * N_img, D]
            embeds = embeds.masked_scatter(mask, features)
        out = model.generate(input_ids=ids, inputs_embeds=embeds, attention_mask=torch.ones_like(ids),
                             max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                             logits_processor=LogitsProcessorList([clock]), return_dict_in_generate=True,
                             pad_token_id=0, eos_token_id=None)
        synchronize(device)
    prefill = clock.times[0] - start
    decode = clock.times[-1] - clock.times[0]
    steps = len(clock.times) - 1
    return {
        "batch": batch,
        "prompt_tokens": batch * len(input_ids),
        "new_tokens": new_tokens,
        "prefill_seconds": prefill,
        "decode_seconds": decode,
        "decode_steps": steps,
        "prefill_tokens_per_s": batch * len(input_ids) / prefill,
        "decode_tokens_per_s": steps * batch / decode if steps else None,
        "kv_cache_bytes": cache_bytes(out.past_key_values),
        "kv_bytes_per_sequence": cache_bytes(out.past_key_values) // batch,
        "peak_memory_bytes": peak.bytes,
        "first_tokens": out.sequences[0, -new_tokens:][:8].tolist(),
    }
