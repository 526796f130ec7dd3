"""`python -m experiments.products`: the matrix libraries' read speed over a decoder's weights."""

import pytest

from experiments import products
from tests.runtime.tiny_models import save_llama


def test_products_bench_times_each_decode_matrix_once(tmp_path, capsys):
    """`python -m experiments.products`: every matrix a decode step multiplies, fused ones once, each library."""
    from minilazy.bench.measure import decoder_weight_bytes
    from minilazy.model import Model

    save_llama(tmp_path, hidden=64, layers=3)
    model = Model.from_pretrained(tmp_path, backend="torch")
    matrices = products.decode_matrices(model)
    assert len(matrices) == 3 * 4 + 1  # q/k/v, o, gate/up, down per layer; the output head
    norms = sum(w.numel() * w.element_size() for layer in model.decoder.layers for w in layer.values() if w.dim() == 1)
    norms += model.decoder.norm.numel() * model.decoder.norm.element_size()
    assert sum(w.numel() * w.element_size() for w in matrices) == decoder_weight_bytes(model) - norms
    products.main(["--model", str(tmp_path), "--batch-sizes", "1", "3", "--threads", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("13 matrices") and len(lines) == 3
    for batch, line in zip((1, 3), lines[1:]):
        speeds = [float(part.split()[-2]) for part in line.split(": ", 1)[1].split(", ")]
        assert line.startswith(f"batch {batch}: MKL (F.linear) ") and "oneDNN" in line and min(speeds) > 0
        assert len(speeds) == len(products.LIBRARIES) and "oneDNN packed" in line
    with pytest.raises(SystemExit, match="batch sizes must be at least 1"):
        products.main(["--model", str(tmp_path), "--batch-sizes", "0"])

