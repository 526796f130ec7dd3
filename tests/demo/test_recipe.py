"""The demo model's one-command recipe: its phases are valid training runs that chain, within budget."""

import json

import torch

from minilazy.demo import recipe, train
from minilazy.model import Model


def test_every_phase_parses_and_continues_from_the_one_before():
    for index in range(len(recipe.PHASES)):
        args = train.parse_args(recipe.phase_argv(index, "out/x", seed=7, passed=["--threads", "1"]))
        assert args.seed == 7 + index and args.out == "out/x" and args.threads == 1
        if index == 0:
            assert args.init_from is None and args.vision_minutes == recipe.VISION_MINUTES
        else:
            assert args.init_from == "out/x" and args.vision_minutes == 0
    late = train.parse_args(recipe.phase_argv(len(recipe.PHASES) - 1, "out/x", 0, []))
    assert "where" in late.families and late.families.count("relation") == 3


def test_the_budget_leaves_room_for_validation_within_90_minutes():
    assert recipe.VISION_MINUTES + sum(minutes for minutes, _, _ in recipe.PHASES) <= 85


def test_options_passed_to_the_recipe_override_every_phase():
    argv = recipe.phase_argv(3, "out/x", 0, ["--lr", "1e-4", "--precision", "fp32"])
    args = train.parse_args(argv)
    assert args.lr == 1e-4 and args.precision == "fp32"


def test_a_tiny_recipe_runs_all_phases_into_one_checkpoint(tmp_path):
    out = tmp_path / "run"
    recipe.main(["--out", str(out), "--seed", "3", "--threads", str(torch.get_num_threads()),
                 "--layers", "2", "--hidden", "32", "--vision-hidden", "32", "--vision-steps", "3",
                 "--vision-batch-size", "2", "--steps", "2", "--batch-size", "2", "--questions-per-image", "2",
                 "--warmup", "2", "--validation-size", "4"])
    runs = json.loads((out / "training_info.json").read_text())["runs"]
    assert [run["arguments"]["seed"] for run in runs] == [3 + i for i in range(len(recipe.PHASES))]
    assert all(run["stage"] == "done" and run["step"] == 2 for run in runs)
    assert runs[1]["arguments"]["init_from"] == str(out)
    log = (out / "training_log.txt").read_text()
    assert log.count("final step 2") == len(recipe.PHASES) and "nan" not in log
    assert Model.from_pretrained(out, backend="torch").config.text.num_hidden_layers == 2
