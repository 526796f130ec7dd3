"""Lazy layers chosen by their measured effect on the output distributions: valid plans of the asked
ratio, and the layer whose inheritance changes nothing chosen first."""

from __future__ import annotations

import pytest
import torch

import cli
from minilazy.lazy.calibrate import calibrate
from minilazy.lazy.effect import EffectPlanner, OutputDivergence, window_batches
from minilazy.lazy.mass_correction import with_mass_offsets
from minilazy.lazy.plan import LayerPlan
from minilazy.model import Model
from minilazy.pipeline import Pipeline
from tests.runtime.tiny_models import save_llama, save_tiny_vlm

LAYERS = 6
UNIFORM = (2, 3)  # layers with zero query and key weights: both attend uniformly


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    return save_tiny_vlm(tmp_path_factory.mktemp("effect") / "model", LAYERS)


@pytest.fixture(scope="module")
def uniform_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("effect") / "llama"
    save_llama(path, layers=LAYERS, kv_heads=2)
    model = Model.from_pretrained(path, backend="torch")
    for layer in UNIFORM:
        for name in ("q_proj", "k_proj"):
            model.weights[f"text.layers.{layer}.self_attn.{name}.weight"].zero_()  # a view of the fused matrix
    return model


@pytest.mark.parametrize("method", ["rank", "greedy"])
@pytest.mark.parametrize("ratio, depth", [(0.5, 1), (0.34, 2), (0.0, 1)])
def test_effect_calibration_gives_a_valid_plan_of_the_ratio(llava, method, ratio, depth):
    from minilazy.demo.scenes import make_scene, render

    pipeline = Pipeline.load(llava, backend="torch")
    samples = [(render(make_scene(seed)), question) for seed, question in enumerate(["What is it?", "Describe it."])]
    plan = calibrate(pipeline, samples, ratio, depth, method=method, progress=False, max_new_tokens=4)
    assert isinstance(plan, LayerPlan) and plan.depth == depth and plan.anchors[0] == 0
    assert len(plan.lazy_layers) == round(ratio * LAYERS)


@pytest.mark.parametrize("method", ["rank", "greedy"])
def test_the_layer_whose_inheritance_changes_nothing_is_made_lazy_first(uniform_model, method):
    windows = torch.randint(3, 96, (4, 24))
    divergence = OutputDivergence(uniform_model, window_batches(windows, span=10, batch_size=3))
    same = LayerPlan((0, 1, 2, 2, 4, 5))
    assert divergence(same) < 1e-6 < divergence(LayerPlan((0, 1, 1, 3, 4, 5)))
    planner = EffectPlanner(divergence, LAYERS, method, progress=False)
    assert planner.plan(1 / LAYERS) == same
    two = planner.plan(2 / LAYERS)
    assert UNIFORM[1] in two.lazy_layers and len(two.lazy_layers) == 2


def test_candidates_are_measured_with_the_refinements_they_will_run_with(uniform_model):
    windows = torch.randint(3, 96, (2, 20))
    batches = window_batches(windows, span=8)
    image_lse = torch.randn(LAYERS, uniform_model.config.text.num_attention_heads)  # [L, H]
    plan = LayerPlan((0, 0, 2, 3, 3, 5))
    refined = OutputDivergence(uniform_model, batches, image_lse, exact_image_rows=True)(plan)
    by_hand = OutputDivergence(uniform_model, batches, exact_image_rows=True)(with_mass_offsets(plan, image_lse))
    assert refined == pytest.approx(by_hand, rel=1e-6)
    assert abs(refined - OutputDivergence(uniform_model, batches)(plan)) > 1e-3 * refined


def test_greedy_with_fastv_keeps_the_layers_around_it_active(uniform_model):
    windows = torch.randint(3, 96, (2, 20))
    planner = EffectPlanner(OutputDivergence(uniform_model, window_batches(windows, span=8)), LAYERS, "greedy",
                            progress=False)
    plan = planner.plan(0.5, depth=2, fastv_layer=3)  # layers 2 and 3 stay active; at most 3 others lazy
    assert len(plan.lazy_layers) == 3 and not {2, 3} & set(plan.lazy_layers)
    assert all(plan.anchors[l] >= 3 for l in plan.lazy_layers if l >= 3)


def test_calibrate_command_with_an_effect_method(llava, tmp_path, capsys):
    out = tmp_path / "plan.json"
    status = cli.main(["calibrate", "--model", str(llava), "--images", "2", "--ratio", "0.5", "--method", "rank",
                       "--max-new-tokens", "3", "--backend", "torch", "--out", str(out)])
    assert status == 0 and len(LayerPlan.load(out).lazy_layers) == LAYERS // 2
    status = cli.main(["calibrate", "--model", str(llava), "--images", "2", "--ratio", "0.5", "--method", "greedy",
                       "--plot", str(tmp_path / "js.png"), "--out", str(out)])
    assert status == 2 and "only apply with --method js" in capsys.readouterr().err
