"""`python cli.py study` and `python cli.py eval` on a tiny random LLaVA checkpoint.

The tiny model cannot answer the demo questions (its tokenizer is character-level and its
weights random), so these tests check the machinery: every run of the sweep is present with
every field, the KV cache saving comes from the allocated caches and grows with the lazy
layers, the outputs are written, and `eval` runs end to end and rejects bad input.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import cli
from minilazy.config import parse_config
from minilazy.demo.evaluate import held_out_questions
from minilazy.demo.questions import FAMILIES
from minilazy.demo.scenes import make_scene, render
from minilazy.kv_cache import full_attention_bytes
from minilazy.pipeline import Pipeline
from minilazy.study import default_runs
from minilazy.study.sweep import fastv_ratios
from tests.runtime.tiny_models import save_tiny_vlm

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
LAYERS = 6
SMALL = ["--n", "2", "--calib", "1", "--batch-size", "2", "--max-new-tokens", "2", "--backend", "torch"]
RUN_FIELDS = {"name", "settings", "plan", "lazy_layers", "kv_cache_bytes", "kv_cache_bytes_full", "kv_saved_percent",
              "accuracy", "per_family", "describe_f1", "describe_objects", "seconds"}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_tiny_vlm(tmp_path_factory.mktemp("study") / "model", LAYERS)


@pytest.fixture(scope="module")
def study(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("study_out")
    status = cli.main(["study", "--model", str(model), *SMALL, "--out", str(out)])
    return status, out, json.loads((out / "study.json").read_text())


def test_study_has_every_run_with_every_field(study):
    status, out, data = study
    assert status == 0
    assert [r["name"] for r in data["runs"]] == [spec.name for spec in default_runs(LAYERS)]
    for run in data["runs"]:
        assert RUN_FIELDS <= set(run), f"{run['name']} lacks {RUN_FIELDS - set(run)}"
        assert set(run["per_family"]) == set(FAMILIES)
        assert 0 <= run["accuracy"] <= 1 and 0 <= run["describe_f1"] <= 1 and run["seconds"] > 0
    assert data["settings"]["n"] == 2 and data["settings"]["calib"] == 1
    assert data["settings"]["mass_correction"] and data["settings"]["exact_image_rows"]  # the defaults
    for run in data["runs"]:  # lazy visual plans carry their offsets, one per head of every lazy layer
        if run["settings"]["kind"] == "lazy":
            offsets = run["plan"]["mass_offsets"]
            assert all(bool(offsets[l]) == (l in run["plan"]["lazy_layers"]) for l in range(LAYERS))
    assert len(data["divergence"]) == LAYERS
    assert "python cli.py study" in data["command"] and "--n 2" in data["command"]
    for name in ("study.md", "study.png", "heatmap.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_kv_saving_is_measured_and_grows_with_lazy_layers(study, model):
    _, _, data = study
    runs = {r["name"]: r for r in data["runs"]}
    full = runs["full attention"]
    assert full["kv_saved_percent"] == 0 and full["kv_cache_bytes"] == full["kv_cache_bytes_full"] > 0
    # the full-attention figure is the formula for the allocation (one batch of both questions, slots for the
    # longer prompt and the new tokens); the other runs' bytes are what they allocated
    config = parse_config(json.loads((model / "config.json").read_text()))
    pipeline = Pipeline.load(model, backend="torch")
    longest = max(len(pipeline.request(qa.question, render(make_scene(seed))).input_ids)
                  for seed, qa in held_out_questions(2))
    assert full["kv_cache_bytes_full"] == full_attention_bytes(config, 2, longest + 2, 4)
    lazy = sorted((r for r in data["runs"] if r["settings"]["kind"] == "lazy"), key=lambda r: r["settings"]["lazy_ratio"])
    assert lazy[0]["lazy_layers"] > 0 and lazy[-1]["lazy_layers"] > lazy[0]["lazy_layers"]
    for a, b in zip(lazy, lazy[1:]):
        assert b["lazy_layers"] >= a["lazy_layers"]
        # every extra lazy layer drops its image keys: strictly more saved, the same layers save the same
        assert (b["kv_saved_percent"] > a["kv_saved_percent"]) == (b["lazy_layers"] > a["lazy_layers"])
    assert all(r["kv_saved_percent"] > 0 and r["kv_cache_bytes"] < r["kv_cache_bytes_full"]
               for r in data["runs"] if r["name"] != "full attention")
    # scope `all` also drops text keys; FastV drops image tokens from layer 2 on, more at a higher ratio
    assert runs["lazy-all 0.5"]["kv_saved_percent"] > runs["lazy 0.5"]["kv_saved_percent"]
    assert runs["FastV K=2 R=0.75"]["kv_saved_percent"] > runs["FastV K=2 R=0.5"]["kv_saved_percent"]
    combo = runs["lazy 0.5 + FastV K=2 R=0.5"]
    assert combo["plan"]["anchors"][1] == 1 and combo["plan"]["anchors"][2] == 2  # valid with FastV at layer 2
    assert combo["kv_saved_percent"] > runs["FastV K=2 R=0.5"]["kv_saved_percent"]
    # VTW keeps no image tokens from layer K on: the earlier K, the more saved
    vtw = [runs[f"VTW K={k}"]["kv_saved_percent"] for k in (3, 4, 5)]
    assert vtw[0] > vtw[1] > vtw[2] > 0


def test_study_with_plans_chosen_by_their_effect(model, tmp_path):
    assert cli.main(["study", "--model", str(model), *SMALL, "--lazy-method", "greedy", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "study.json").read_text())
    assert data["settings"]["lazy_method"] == "greedy" and "--lazy-method greedy" in data["command"]
    for run in data["runs"]:
        if run["settings"]["kind"] in ("lazy", "lazy-all"):
            assert run["lazy_layers"] == round(run["settings"]["lazy_ratio"] * LAYERS)
            assert run["plan"]["threshold"] is None


def test_eval_command_end_to_end(model, tmp_path):
    out = tmp_path / "eval.json"
    result = subprocess.run([sys.executable, "cli.py", "eval", "--model", str(model), *SMALL, "--lazy-ratio", "0.5",
                             "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert {"accuracy", "per_family", "describe_objects", "kv_cache_bytes", "kv_cache_bytes_full", "kv_saved",
            "settings", "seconds"} <= set(data)
    assert data["n"] == 2 and data["settings"]["calib"] == 1 and len(data["settings"]["lazy_plan"]["lazy_layers"]) == 3
    assert 0 < data["kv_saved"] < 1 and data["kv_cache_bytes"] < data["kv_cache_bytes_full"]
    for word in ("overall", "describe objects", "KV cache", "saved"):
        assert word in result.stdout


@pytest.mark.parametrize("flags, says", [(["--n", "0"], "--n must be a positive number"),
                                         (["--n", "2", "--fastv-layer", "2"], "FastV needs both")])
def test_eval_bad_input_is_one_line_error(model, capsys, flags, says):
    assert cli.main(["eval", "--model", str(model), "--backend", "torch", *flags]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and says in err[0], err


def test_help_mentions_every_flag():
    for command, flags in (("eval", ["--model", "--n", "--seed-offset", "--batch-size", "--json", "--lazy",
                                     "--lazy-ratio", "--lazy-scope", "--q-cache-depth", "--no-fast-decode",
                                     "--fastv-layer", "--fastv-ratio", "--calib", "--lazy-method", "--vtw-layer"]),
                           ("study", ["--model", "--n", "--calib", "--out", "--seed-offset", "--batch-size",
                                      "--lazy-method", "--data", "--prompt-suffix", "--only", "--per-layer",
                                      "--mass-correction", "--exact-image-rows", "--max-new-tokens"])):
        text = cli.COMMANDS[command].parser().format_help()
        for flag in flags:
            assert flag in text, f"{command} --help does not mention {flag}"


def test_per_layer_ablation_makes_each_layer_lazy_alone(model, tmp_path, capsys):
    assert cli.main(["study", "--model", str(model), *SMALL, "--per-layer", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "per_layer.json").read_text())
    assert [row["layer"] for row in data["layers"]] == list(range(1, LAYERS))
    assert all(row["anchor"] == row["layer"] - 1 and row["kv_saved_percent"] > 0 for row in data["layers"])
    assert 0 <= data["full"]["accuracy"] <= 1 and "--per-layer" in data["command"]
    assert (tmp_path / "per_layer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "layer  1 lazy:" in capsys.readouterr().out


def test_fastv_runs_at_the_kv_savings_of_a_quarter_half_and_three_quarters_of_the_layers_lazy():
    # n lazy visual layers save what FastV at layer 2 saves with R = n / (2 (L - 2)); then the paper's 0.5, 0.75
    assert fastv_ratios(12) == [0.15, 0.3, 0.45, 0.5, 0.75]
    assert fastv_ratios(30) == [0.14, 0.27, 0.39, 0.5, 0.75]
    assert fastv_ratios(2) == [0.5, 0.75]  # no layer after FastV's
