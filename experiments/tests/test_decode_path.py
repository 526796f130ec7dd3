"""experiments/decode_path.py lists the files a lazy decode step runs in, the lazy layer's among them."""

from experiments.decode_path import ROOT, files_on_the_path
from minilazy import Pipeline


def test_the_path_runs_through_decode_step_and_a_lazy_layer(monkeypatch):
    monkeypatch.chdir(ROOT)
    files = files_on_the_path(Pipeline.load(ROOT / "weights" / "demo", backend="reference"), ratio=0.25)
    assert {"minilazy/generate.py", "minilazy/lazy/layers.py", "minilazy/kernels/decode_attention.py"} <= set(files)
    assert not any(f.startswith("minilazy/kernels/cpu/") for f in files)  # the references never call the CPU path
