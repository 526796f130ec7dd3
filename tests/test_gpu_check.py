"""The GPU check (minilazy/gpu_check/) on this CPU: the runner's handling of failing parts, and the dry run."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minilazy.gpu_check import runtime
from minilazy.gpu_check.runner import REPO, Part, run_check
from minilazy.gpu_check.setting import Setting, write_json


def raising_part(out_dir, setting):
    raise RuntimeError("simulated failure")


def sleeping_part(out_dir, setting):
    time.sleep(60)
    return True, []


def passing_part(out_dir, setting):
    write_json(out_dir / "passing.json", {"dry_run": setting.dry_run, "budget_s": setting.budget_s})
    return True, ["   all good"]


def test_a_failing_part_is_reported_and_the_next_still_runs(tmp_path):
    parts = [Part("raising", "tests.test_gpu_check:raising_part", 30, 30),
             Part("sleeping", "tests.test_gpu_check:sleeping_part", 3, 3),
             Part("passing", "tests.test_gpu_check:passing_part", 30, 30)]
    lines = []
    report = run_check(tmp_path, True, parts, echo=lines.append)
    raising, sleeping, passing = (report["parts"][p.name] for p in parts)
    assert raising["status"] == "error" and any("simulated failure" in line for line in raising["error"])
    assert sleeping["status"] == "timed_out" and sleeping["seconds"] < 20
    assert passing["status"] == "passed" and passing["summary"] == ["   all good"]
    assert json.loads((tmp_path / "passing.json").read_text()) == {"dry_run": True, "budget_s": 30}
    assert json.loads((tmp_path / "check.json").read_text())["parts"].keys() == {"raising", "sleeping", "passing"}
    assert "== raising: error" in "\n".join(lines) and "== passing: passed" in "\n".join(lines)


def test_the_runtime_part_starts_no_model_past_its_time_limit(tmp_path):
    ok, lines = runtime.run(tmp_path, Setting(dry_run=True, budget_s=0))
    data = json.loads((tmp_path / "runtime.json").read_text())
    assert not ok and not data["passed"] and data["models"] == {}
    assert data["skipped"] == ["demo", "llava", "idefics3", "qwen2_5_vl", "qwen2_vl"]
    assert "skipped at the time limit" in lines[-1]


@pytest.mark.slow
def test_dry_run_runs_every_part(tmp_path):
    """The command as docs/gpu.md gives it, with the repository on PYTHONPATH and no install."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "minilazy.gpu_check", str(tmp_path), "--dry-run"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=400)
    check = json.loads((tmp_path / "check.json").read_text())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {name: part["status"] for name, part in check["parts"].items()} == dict.fromkeys(
        ("kernels", "runtime", "serve", "bench"), "passed")
    assert check["dry_run"] and "== bench: passed" in proc.stdout

    kernels = json.loads((tmp_path / "kernels.json").read_text())
    assert kernels["files"].keys() == {"test_linear.py", "test_rms_norm.py"}
    assert kernels["totals"]["passed"] > 0 and kernels["totals"]["skipped"] > 0  # the GPU-sized cases, skipped
    assert all({"passed", "failed", "errors", "skipped", "seconds"} <= r.keys() for r in kernels["files"].values())

    runtime = json.loads((tmp_path / "runtime.json").read_text())
    assert runtime["models"].keys() == {"demo", "llava", "idefics3", "qwen2_5_vl", "qwen2_vl"} and runtime["passed"]
    for model in runtime["models"].values():
        assert model["runs"].keys() == {"full", "lazy-r2-all", "lazy-r1-visual+fastv"}
        assert all(r["tokens_equal"] and "steps_max_abs_diff" in r for r in model["runs"].values())
    assert "prompt_max_abs_diff" in runtime["models"]["demo"]["runs"]["full"]
    assert len(set(runtime["models"]["qwen2_5_vl"]["prompt_tokens"])) == 2  # images of two sizes

    serve = json.loads((tmp_path / "serve.json").read_text())
    assert serve["passed"] and serve["exactness"]["variants"].keys() == {"full", "lazy", "lazy + fastv"}
    for r in serve["exactness"]["variants"].values():
        assert r["tokens_equal"] and r["kv_bytes_equal"] and r["tokens"] == r["expected_tokens"]
        assert r["running_peak"] >= 2 and r["kv_bytes_used_after"] == 0
    fast = serve["throughput"]
    assert fast["variants"].keys() == {"full", "lazy-0.8", "lazy-0.8+fastv"}
    n, fit = fast["requests"], fast["full_attention_fit"]
    for name, r in fast["variants"].items():
        assert {"running_peak", "output_tokens", "seconds", "output_tokens_per_s", "kv_bytes_per_request"} <= r.keys()
        assert r["passed"] and r["finished"] == {"length": n} and r["output_tokens"] == n * fast["new_tokens"]
        assert r["running_peak"] == fit if name == "full" else r["running_peak"] > fit  # the same budget
        assert r["kv_bytes_per_request"] * r["running_peak"] <= fast["kv_budget_bytes"]

    bench = json.loads((tmp_path / "bench.json").read_text())
    assert {(r["backend"], r["variant"]) for r in bench["runs"]} == {
        ("reference", v) for v in ("full", "lazy-0.5", "lazy-0.8", "fastv")} | {("transformers", "full"),
                                                                                 ("torch", "full")}
    assert all("decode_tokens_per_s" in r and "kv_cache_bytes" in r for r in bench["runs"])
    assert bench["summary"].keys() == {"full", "lazy-0.5", "lazy-0.8", "fastv", "transformers", "full (torch)"}
    assert bench["summary"]["lazy-0.8"]["kv_saved_vs_full"] > 0
