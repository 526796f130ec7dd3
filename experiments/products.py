"""How fast the CPU's matrix libraries read a decoder's weights: MKL (`F.linear`) against oneDNN, plain and packed.

    python -m experiments.products --model out/bench-model --threads 2

A decode step at batch B multiplies every weight matrix of the decoder by B rows, once. This times
exactly those products (the fused matrices as the model holds them, and the output head), with
torch's `F.linear` (MKL), with oneDNN on the plain weights and with oneDNN on its packed copies (what
the CPU path, `minilazy/kernels/cpu/onednn.py`, uses for fp32 inference), best of a few passes, and prints the bytes of weights
read per second next to the machine's copy bandwidth.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from minilazy.kernels.cpu.onednn import PackedWeights, onednn_linear
from minilazy.bench.measure import copy_bandwidth
from minilazy.errors import InputError
from minilazy.models.fused import multiplied

PACKED = PackedWeights()  # this bench's packed copies, made in the warm-up pass
LIBRARIES = {
    "MKL (F.linear)": F.linear,
    "oneDNN": onednn_linear,
    "oneDNN packed": lambda x, w: onednn_linear(x, PACKED.get(w)),
}


def decode_matrices(model) -> list[torch.Tensor]:
    """Every matrix one decode step multiplies: each layer's (fused where fused) and the output head."""
    return [w for layer in model.decoder.layers for w in multiplied(layer)] + [model.decoder.lm_head]


def read_speed(matrices: list[torch.Tensor], batch: int, product, passes: int = 3) -> float:
    """Bytes of weights read per second by `product(x [batch, K], w)` over `matrices`, best of `passes`."""
    inputs = {w.shape[1]: torch.randn(batch, w.shape[1], dtype=w.dtype) for w in matrices}
    best = float("inf")
    for _ in range(passes + 1):  # the first pass warms the libraries' caches of prepared shapes
        start = time.perf_counter()
        for w in matrices:
            product(inputs[w.shape[1]], w)
        best = min(best, time.perf_counter() - start)
    return sum(w.numel() * w.element_size() for w in matrices) / best


def main(argv=None) -> None:
    from minilazy.model import Model

    parser = argparse.ArgumentParser(prog="python -m experiments.products", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="weights/demo", help="model directory (default: weights/demo)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16], metavar="B",
                        help="rows per product, as in a decode step at batch B (default: 1 16)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if any(b < 1 for b in args.batch_sizes):
        raise SystemExit(f"error: batch sizes must be at least 1, got {args.batch_sizes}")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model = Model.from_pretrained(args.model, torch.float32, backend="torch")
    except InputError as err:
        raise SystemExit(f"error: {err}") from None
    matrices = decode_matrices(model)
    megabytes = sum(w.numel() * w.element_size() for w in matrices) / 1e6
    bandwidth = copy_bandwidth(torch.device("cpu"))
    print(f"{len(matrices)} matrices, {megabytes:.0f} MB; copy bandwidth {bandwidth / 1e9:.1f} GB/s; "
          f"{torch.get_num_threads()} threads")
    with torch.inference_mode():
        for batch in args.batch_sizes:
            speeds = ", ".join(f"{name} {read_speed(matrices, batch, product) / 1e9:.1f} GB/s"
                               for name, product in LIBRARIES.items())
            print(f"batch {batch}: {speeds}")


if __name__ == "__main__":
    main()
