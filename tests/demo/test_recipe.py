"""The demo model's one-command recipe: its phases are valid training runs that chain, within budget."""

import json

import pytest
import torch

from minilazy.demo import recipe, train
from minilazy.model import Model


def test_every_phase_parses_and_continues_from_the_one_before():
    for index in range(len(recipe.PHASES)):
        args = train.parse_args(recipe.phase_argv(index, "out/x", seed=7, passed=["--threads", "1"]))
        assert args.seed == 7 + index and args.out == "out/x" and args.threads == 1 and args.overwrite
        if index == 0:
            assert args.init_from is None and args.vision_minutes == recipe.VISION_MINUTES
        else:
            assert args.init_from == "out/x" and args.vision_minutes == 0
    for index in (len(recipe.PHASES) - 2, len(recipe.PHASES) - 1):  # the late phases ask positions and relations
        late = train.parse_args(recipe.phase_argv(index, "out/x", 0, []))
        assert "where" in late.families and late.families.count("relation") >= 2 and late.grounding_weight > 0


def test_the_budget_leaves_room_for_validation_within_90_minutes():
    # a phase's own start, validations and checkpoints take seconds: phase 4 of run m (README) stopped
    # on its 16-minute cap after 16.0 minutes, checkpoint included
    assert recipe.VISION_MINUTES + sum(minutes for minutes, _, _ in recipe.PHASES) <= 89


def test_options_passed_to_the_recipe_override_every_phase():
    argv = recipe.phase_argv(3, "out/x", 0, ["--lr", "1e-4", "--precision", "fp32"])
    args = train.parse_args(argv)
    assert args.lr == 1e-4 and args.precision == "fp32"


@pytest.mark.slow
def test_a_tiny_recipe_runs_all_phases_into_one_checkpoint(tmp_path):
    out = tmp_path / "run"
    recipe.main(["--out", str(out), "--seed", "3", "--threads", str(torch.get_num_threads()),
                 "--layers", "2", "--hidden", "32", "--vision-hidden", "32", "--vision-steps", "3",
                 "--vision-batch-size", "2", "--steps", "2", "--batch-size", "2", "--questions-per-image", "2",
                 "--warmup", "2", "--validation-size", "4", "--grounding-layer", "1"])
    runs = json.loads((out / "training_info.json").read_text())["runs"]
    assert [run["arguments"]["seed"] for run in runs] == [3 + i for i in range(len(recipe.PHASES))]
    assert all(run["stage"] == "done" and run["step"] == 2 for run in runs)
    assert runs[1]["arguments"]["init_from"] == str(out)
    log = (out / "training_log.txt").read_text()
    assert log.count("final step 2") == len(recipe.PHASES) and "nan" not in log
    assert Model.from_pretrained(out, backend="torch").config.text.num_hidden_layers == 2
    last = len(recipe.PHASES)
    resume = ["--out", str(out), "--seed", "3", "--first-phase", str(last), "--threads", "1", "--steps", "2",
              "--batch-size", "2", "--questions-per-image", "2", "--warmup", "2", "--validation-size", "4",
              "--grounding-layer", "1"]
    with pytest.raises(SystemExit) as refused:  # resuming writes over the checkpoint too
        recipe.main(resume)
    assert refused.value.code == 2 and len(json.loads((out / "training_info.json").read_text())["runs"]) == last
    recipe.main(resume + ["--overwrite"])
    runs = json.loads((out / "training_info.json").read_text())["runs"]
    assert len(runs) == last + 1 and runs[-1]["arguments"]["seed"] == 3 + last - 1  # the last phase once more


def test_a_later_first_phase_needs_the_checkpoint_of_the_phase_before(tmp_path):
    with pytest.raises(SystemExit, match="has none"):
        recipe.main(["--out", str(tmp_path / "empty"), "--first-phase", "2"])


def test_the_output_directory_must_be_named(capsys):
    with pytest.raises(SystemExit) as refused:
        recipe.parse_args(["--seed", "3"])
    assert refused.value.code == 2 and "--out" in capsys.readouterr().err


def test_a_directory_holding_a_checkpoint_is_refused_and_left_untouched(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    with pytest.raises(SystemExit) as refused:
        recipe.main(["--out", str(out), "--steps", "2"])
    assert refused.value.code == 2 and capsys.readouterr().err.count("\n") == 1
    assert [path.name for path in out.iterdir()] == ["config.json"] and (out / "config.json").read_text() == "{}"
