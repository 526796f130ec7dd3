"""Calibration: the divergence between layers' attention, the walk that turns it into a plan, and
`python cli.py calibrate` end to end on a tiny LLaVA."""

from __future__ import annotations

import json
import math

import pytest
import torch

import cli
from minilazy.lazy.calibrate import js_divergence, plan_for_ratio, record_attention, walk
from minilazy.lazy.mass_correction import image_lse_means
from minilazy.lazy.plan import LayerPlan
from minilazy.pipeline import Pipeline
from minilazy.study import calibration_samples
from tests.runtime.tiny_models import save_tiny_vlm

LAYERS = 4


def divergences(pairs: dict[tuple[int, int], float], n: int = 6) -> torch.Tensor:
    """A symmetric `[n, n]` divergence matrix, 1.0 wherever `pairs` is silent."""
    js = torch.ones(n, n)
    js.fill_diagonal_(0)
    for (i, j), value in pairs.items():
        js[i, j] = js[j, i] = value
    return js


def test_js_divergence_bounds():
    p = torch.tensor([0.5, 0.5, 0.0, 0.0])
    assert float(js_divergence(p, p)) == 0
    assert float(js_divergence(p, torch.tensor([0.0, 0.0, 0.5, 0.5]))) == pytest.approx(math.log(2))
    assert float(js_divergence(p, torch.tensor([0.25, 0.25, 0.25, 0.25]))) < math.log(2) / 2


def test_walk_inherits_from_the_closest_recent_active_layer():
    js = divergences({(1, 0): 0.01, (2, 0): 0.5, (3, 2): 0.02, (4, 0): 0.03, (4, 2): 0.3, (5, 2): 0.6})
    assert walk(js, 0.1).anchors == (0, 0, 2, 2, 4, 5)  # depth 1: layer 4 sees only layer 2, too far
    assert walk(js, 0.1, depth=2).anchors == (0, 0, 2, 2, 0, 5)  # depth 2: layer 0 is in reach and closer
    assert walk(js, 0.0).anchors == tuple(range(6))  # nothing is closer than 0
    assert walk(js, 0.1, scope="all") == LayerPlan((0, 0, 2, 2, 4, 5), scope="all")


def test_walk_keeps_the_layers_around_fastv_active():
    # every layer is close to layer 0 and to its predecessor: without FastV they all inherit from 0
    js = divergences({**{(l, 0): 0.01 for l in range(1, 6)}, **{(l, l - 1): 0.02 for l in range(1, 6)},
                      (4, 2): 0.005, (4, 3): 0.05}, n=6)
    assert walk(js, 0.1, depth=2).anchors == (0, 0, 0, 0, 0, 0)
    # FastV at K = 3: layers 2 and 3 stay active; layer 4 is closest to 2 but may only inherit from 3
    # (the token set changes at K), and layer 5 is not close to layer 3
    assert walk(js, 0.1, depth=2, fastv_layer=3).anchors == (0, 0, 2, 3, 3, 5)


def test_plan_for_ratio_reaches_the_ratio_and_returns_its_threshold():
    js = divergences({(1, 0): 0.01, (2, 1): 0.02, (3, 2): 0.03, (4, 3): 0.04, (5, 4): 0.05}, n=6)
    for ratio, lazy in ((0.0, 0), (0.2, 1), (0.5, 3)):
        plan, threshold = plan_for_ratio(js, ratio)
        assert len(plan.lazy_layers) == lazy
        assert walk(js, threshold) == plan


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_tiny_vlm(tmp_path_factory.mktemp("calibrate") / "model", LAYERS)


def test_calibrate_command_writes_plan_and_heatmap(model, tmp_path, capsys):
    out = tmp_path / "new" / "plan.json"  # its folder does not exist yet
    status = cli.main(["calibrate", "--model", str(model), "--images", "2", "--ratio", "0.5", "--max-new-tokens", "2",
                       "--backend", "torch", "--out", str(out), "--plot", str(tmp_path / "plots" / "js.png")])
    assert status == 0
    plan = LayerPlan.load(out)
    assert len(plan.lazy_layers) == LAYERS // 2 and f"{plan.inheritance()}" in capsys.readouterr().out
    data = json.loads(out.read_text())
    js = torch.tensor(data["divergence"])
    assert js.shape == (LAYERS, LAYERS) and torch.equal(js, js.T) and bool((js.diagonal() == 0).all())
    assert bool((js + torch.eye(LAYERS) > 0).all()) and float(js.max()) <= math.log(2)
    assert data["samples"] == 2 and walk(js, data["threshold"]) == plan.without_mass_correction()
    assert (tmp_path / "plots" / "js.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("images, says", [("0", "neither a directory"), ("nowhere", "neither a directory")])
def test_calibrate_bad_images_is_an_input_error(model, tmp_path, capsys, images, says):
    status = cli.main(["calibrate", "--model", str(model), "--images", images, "--ratio", "0.5",
                       "--out", str(tmp_path / "plan.json")])
    assert status == 2 and says in capsys.readouterr().err


def test_mass_offsets_are_the_layers_image_lse_against_their_anchors(model, tmp_path):
    plain, corrected = tmp_path / "plain.json", tmp_path / "corrected.json"
    flags = ["calibrate", "--model", str(model), "--images", "2", "--ratio", "0.5", "--max-new-tokens", "2",
             "--backend", "torch"]
    assert cli.main([*flags, "--no-mass-correction", "--out", str(plain)]) == 0
    assert cli.main([*flags, "--out", str(corrected)]) == 0  # the offsets are stored by default
    without, with_offsets = LayerPlan.load(plain), LayerPlan.load(corrected)
    assert without.mass_offsets == () and with_offsets.without_mass_correction() == without
    pipeline = Pipeline.load(model, backend="torch")  # the command's two scenes and prompt, recorded again
    lse = image_lse_means(record_attention(pipeline, calibration_samples(2), 2, progress=False), LAYERS)  # [L, H]
    for layer in with_offsets.lazy_layers:
        expected = lse[layer] - lse[with_offsets.anchors[layer]]
        assert torch.allclose(torch.tensor(with_offsets.mass_offset(layer)), expected, atol=1e-5)
    assert all(with_offsets.mass_offset(l) == () for l in range(LAYERS) if not with_offsets.is_lazy(l))


def test_plans_without_offsets_or_with_bad_ones(tmp_path):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"anchors": [0, 0, 2, 2], "depth": 1, "scope": "visual"}))  # written before offsets
    assert LayerPlan.load(old).mass_offsets == ()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"anchors": [0, 0, 2, 2], "mass_offsets": [[], [0.1], [0.2], [0.3, 0.4]]}))
    with pytest.raises(Exception, match="mass offsets"):
        LayerPlan.load(bad)
