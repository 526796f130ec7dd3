"""`python cli.py loadtest --compare`: variant names to serve flags, and a smoke run of two servers on one budget."""

import json

import pytest

from cli import main
from minilazy.errors import InputError
from minilazy.sampler import SamplingParams
from minilazy.serve import Engine
from minilazy.serve.compare import COLUMNS, variant_flags
from tests.serve.conftest import QUESTIONS


def test_variant_names_stand_for_serve_flags():
    assert variant_flags("full", 2, 0.5) == []
    assert variant_flags("lazy0.8", 2, 0.5) == ["--lazy-ratio", "0.8"]
    assert variant_flags("lazy0.8+fastv", 3, 0.25) == ["--lazy-ratio", "0.8", "--fastv-layer", "3",
                                                       "--fastv-ratio", "0.25"]
    assert variant_flags("vtw6", 2, 0.5) == ["--vtw-layer", "6"]
    assert variant_flags("full", 2, 0.5, "8") == [] and variant_flags("fastv", 2, 0.5, "8")[-1] == "0.5"
    assert variant_flags("lazy0.8+fastv", 2, 0.5, "8")[-2:] == ["--calib-images", "8"]
    for bad in ("lazy", "lazy1.5", "fast", "full+fastv", "fastv+vtw6"):
        with pytest.raises(InputError):
            variant_flags(bad, 2, 0.5)


def test_a_bad_variant_or_budget_is_a_one_line_error(capsys):
    assert main(["loadtest", "--compare", "full", "lazyish"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown variant 'lazyish'")
    with pytest.raises(SystemExit):
        main(["loadtest", "--compare", "--kv-budget", "lots"])
    assert "not a size" in capsys.readouterr().err


@pytest.mark.slow
def test_compare_two_variants_prints_a_table_and_writes_json(pipeline, tmp_path, capsys):
    image, question = QUESTIONS[1]
    budget = 3 << 20
    out = tmp_path / "compare.json"
    status = main(["loadtest", "--compare", "full", "lazy0.5", "-n", "4", "--concurrency", "4", "--max-tokens", "8",
                   "--image", str(image), "--prompt", question, "--kv-budget", "3MiB", "--max-batch", "8",
                   "--max-model-len", "512", "--ignore-eos", "--calib-images", "2", "--serve-args", "--backend torch",
                   "--json", str(out)])
    assert status == 0
    printed = capsys.readouterr().out
    assert all(column in printed for column in COLUMNS)
    report = json.loads(out.read_text())
    assert [v["variant"] for v in report["variants"]] == ["full", "lazy0.5"]
    assert report["load"]["ignore_eos"] and report["load"]["requests"] == 4
    assert "--max-model-len" in report["serve_flags"]
    full_need = Engine(pipeline.model, budget, max_batch=1).check(pipeline.request(question, image),
                                                                  SamplingParams(8))
    for variant in report["variants"]:
        assert (variant["report"]["requests"], variant["report"]["failed"]) == (4, 0)
        assert variant["report"]["output_tokens"] == 4 * 8  # --ignore-eos: every answer is max_tokens long
        assert 1 <= variant["running_peak"] <= 4
    assert report["variants"][0]["running_peak"] <= budget // full_need
    assert report["variants"][0]["attention"] == "full attention"
    assert report["variants"][1]["attention"].startswith("6 of 12 layers lazy")
