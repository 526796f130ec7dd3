"""How fast the CPU path's decode attention reads the KV cache, against a plain read of the same bytes.

    python -m experiments.attention_reads --model out/bench-model --tokens 1141 --threads 2

A decode step's attention reads each layer's keys and values once: at batch 16 and about 1,100
prompt tokens that is most of the step's bytes. This times, over caches of the model's shapes (one
per layer, laid out as minilazy/kv_cache.py allocates them, so that they do not all fit in the CPU's
caches), best of a few passes:

- `read`: a sum over the keys and values, the bandwidth any reader of these bytes could reach;
- `decode attention`: `CpuOps.decode_attention` (minilazy/kernels/cpu/), as a full-attention layer's decode step
  calls it (torch's fused CPU attention), over the same keys and values;
- `lazy decode attention`: `CpuOps.lazy_decode_attention`, a lazy layer's decode step, over the values
  (the key bucket's rows, `minilazy/kernels/cpu/key_list.py`) and the keys of its TEXT_TOKENS text
  tokens, the others being image tokens whose logits it reads: every layer here shares one anchor's
  logits, so their layout by slot is made once, in the warm-up pass, and the times leave it out (in a
  generation it is made once per anchor and step).

It prints the bytes read per second of each, next to the machine's copy bandwidth.
"""

from __future__ import annotations

import argparse
import time

import torch

from minilazy.kernels.cpu import CpuOps
from minilazy.kernels.cpu.key_list import bucket
from minilazy.bench.measure import copy_bandwidth
from minilazy.config import load_config
from minilazy.errors import InputError
from minilazy.kv_cache import KVCache, full_attention_bytes

SPARE_SLOTS = 64  # slots past the prompt, as a generation call allocates for its new tokens
TEXT_TOKENS = 32  # a lazy layer's text keys (the prompt's words and the answer so far); the others are image tokens


def caches(config, batch: int, tokens: int) -> KVCache:
    """One fp32 key and value cache per layer, `tokens` keys per sequence plus spare slots, filled with noise."""
    cache = KVCache.plain(config.text, batch, tokens + SPARE_SLOTS, torch.float32, "cpu")
    for layer in cache.layers:
        layer.k.normal_()
        layer.v.normal_()
    return cache


def read_speeds(config, batch: int, tokens: int, passes: int = 10) -> dict[str, float]:
    """Bytes per second of each reader (see the module docstring) over every layer's cache, the best of
    `passes` timed passes after a warm-up one."""
    t = config.text
    cache = caches(config, batch, tokens)
    kv_len = torch.full((batch,), tokens, dtype=torch.int32)
    q = torch.randn(batch, t.num_attention_heads, t.head_dim)
    with torch.inference_mode(False):  # a normal tensor even for a caller in inference mode, as the lazy state makes
        logits = torch.randn(batch, t.num_attention_heads, cache[0].v.shape[1])  # one per slot, as the kernels take
    scale = t.head_dim**-0.5
    text_keys = max(1, min(TEXT_TOKENS, tokens - 1))  # at least one key of each kind
    image_keys = max(1, tokens - text_keys)
    image_slots = torch.arange(image_keys, dtype=torch.int32).expand(batch, -1).contiguous()  # [B, N_img]
    text_slots = torch.arange(image_keys, image_keys + text_keys, dtype=torch.int32)
    text_slots = text_slots.expand(batch, -1).contiguous()  # [N_text] -> [B, N_text]
    k_text = torch.randn(batch, text_keys, t.num_key_value_heads, t.head_dim)  # a lazy layer's text-only keys
    n_img, n_text = (torch.full((batch,), n, dtype=torch.int32) for n in (image_keys, text_keys))
    ops = CpuOps()
    # each reader with the cache rows it reads per layer: keys and values, or the values' key bucket
    readers = {
        "read": (lambda c: (c.k[:, :tokens].sum(), c.v[:, :tokens].sum()), 2 * tokens),
        "decode attention": (lambda c: ops.decode_attention(q, c.k, c.v, kv_len, scale=scale), 2 * tokens),
        "lazy decode attention": (lambda c: ops.lazy_decode_attention(q, k_text, c.v, logits, n_img, image_slots,
                                                                      n_text, text_slots, scale=scale),
                                  min(bucket(tokens), cache[0].v.shape[1])),
    }
    row_bytes = full_attention_bytes(config, batch, slots=1, element_size=4) // 2  # the keys of one slot, every layer

    def seconds(reader) -> float:
        start = time.perf_counter()
        for layer in cache.layers:
            reader(layer)
        return time.perf_counter() - start

    speeds = {}
    for name, (reader, rows) in readers.items():
        seconds(reader)  # warm-up: the libraries' caches of prepared shapes, the shared layout of the logits
        speeds[name] = rows * row_bytes / min(seconds(reader) for _ in range(passes))
    return speeds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.attention_reads",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="weights/demo",
                        help="model directory; only its config is read (default: weights/demo)")
    parser.add_argument("--tokens", type=int, default=1141,
                        help="keys per sequence (default: 1141, the bench's image prompt on the SmolVLM-sized model)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16], metavar="B",
                        help="sequences per decode step (default: 1 16)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if any(b < 1 for b in args.batch_sizes) or args.tokens < 1:
        raise SystemExit(f"error: batch sizes and --tokens must be at least 1, got {args.batch_sizes} and "
                         f"{args.tokens}")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        config = load_config(args.model)
    except InputError as err:
        raise SystemExit(f"error: {err}") from None
    t = config.text
    print(f"{t.num_hidden_layers} layers, {t.num_key_value_heads} kv heads of {t.head_dim}, {args.tokens} keys; "
          f"copy bandwidth {copy_bandwidth(torch.device('cpu')) / 1e9:.1f} GB/s; {torch.get_num_threads()} threads")
    for batch in args.batch_sizes:
        speeds = read_speeds(config, batch, args.tokens)
        print(f"batch {batch}: " + ", ".join(f"{name} {speed / 1e9:.1f} GB/s" for name, speed in speeds.items()))


if __name__ == "__main__":
    main()
