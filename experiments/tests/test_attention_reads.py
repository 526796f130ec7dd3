"""`python -m experiments.attention_reads`: the decode attention's read speed over the KV cache."""

import pytest

from experiments import attention_reads
from tests.runtime.tiny_models import save_llama


def test_attention_reads_bench_times_each_reader(tmp_path, capsys, monkeypatch):
    """`python -m experiments.attention_reads`: caches of the model's shapes, each reader a speed, clear errors."""
    from minilazy.config import load_config

    save_llama(tmp_path, hidden=64, layers=3)
    config = load_config(tmp_path)
    cache = attention_reads.caches(config, batch=2, tokens=70)
    assert len(cache.layers) == 3 and cache[0].k.shape == (2, 70 + attention_reads.SPARE_SLOTS,
                                                            config.text.num_key_value_heads, config.text.head_dim)
    assert all(layer.k.abs().sum() > 0 and layer.v.abs().sum() > 0 for layer in cache.layers)  # not the zeros
    clock = iter(range(10**6))  # every pass takes exactly one second
    monkeypatch.setattr(attention_reads.time, "perf_counter", lambda: float(next(clock)))
    speeds = attention_reads.read_speeds(config, batch=2, tokens=70)
    slot_bytes = 2 * config.text.num_key_value_heads * config.text.head_dim * 4 * 3  # one slot of 3 layers, batch 2
    assert speeds == {"read": 2 * 70 * slot_bytes, "decode attention": 2 * 70 * slot_bytes,
                      "lazy decode attention": 128 * slot_bytes}  # the values' key bucket: 70 keys round up to 128
    monkeypatch.undo()
    attention_reads.main(["--model", str(tmp_path), "--tokens", "70", "--batch-sizes", "1", "3", "--threads", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("3 layers") and "70 keys" in lines[0] and len(lines) == 3
    for batch, line in zip((1, 3), lines[1:]):
        parts = line.split(": ", 1)[1].split(", ")
        assert line.startswith(f"batch {batch}: read ") and len(parts) == 3
        assert all(float(part.split()[-2]) > 0 for part in parts)
    with pytest.raises(SystemExit, match="at least 1"):
        attention_reads.main(["--model", str(tmp_path), "--tokens", "0"])
    with pytest.raises(SystemExit, match="no config.json"):
        attention_reads.main(["--model", str(tmp_path / "missing")])
