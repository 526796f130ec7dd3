"""`python cli.py loadtest` against a server in the test: it reports throughput, TTFT and TPOT and writes JSON."""

import json

from cli import main
from minilazy.serve import Engine
from minilazy.serve.server import Server, create_app
from minilazy.serve.worker import EngineThread
from tests.serve.conftest import QUESTIONS, serving


def test_loadtest_reports_and_writes_json(pipeline, tmp_path, capsys):
    """With --ignore-eos every answer has max_tokens tokens; without it, the demo model's short answers stop."""
    engine = Engine(pipeline.model, 1 << 30, max_batch=2, stop_ids=pipeline.stop_ids)
    worker = EngineThread(engine).start()
    image, question = QUESTIONS[0]
    out, natural = tmp_path / "load" / "report.json", tmp_path / "natural.json"
    load = ["loadtest", "-n", "4", "--concurrency", "2", "--max-tokens", "5", "--image", str(image), "--prompt", question]
    try:
        with serving(create_app(Server(pipeline, engine, worker, "demo", 16))) as url:
            status = main([*load, "--url", f"{url}/v1", "--ignore-eos", "--json", str(out)])
            assert main([*load, "--url", f"{url}/v1", "--json", str(natural)]) == 0
    finally:
        worker.stop()
    assert status == 0
    assert json.loads(natural.read_text())["output_tokens"] < 20
    report = json.loads(out.read_text())
    assert (report["requests"], report["failed"], report["output_tokens"], report["model"]) == (4, 0, 20, "demo")
    assert report["request_throughput"] > 0 and report["output_tokens_per_second"] > 0
    for name in ("ttft", "tpot", "latency"):
        assert set(report[name]) == {"mean", "p50", "p90", "p99"} and report[name]["p99"] >= report[name]["p50"] > 0
    printed = capsys.readouterr().out
    assert "request throughput" in printed and "TTFT" in printed and "TPOT" in printed


def test_loadtest_without_a_server_is_a_one_line_error(capsys):
    assert main(["loadtest", "--url", "http://127.0.0.1:9", "-n", "1"]) == 2
    assert capsys.readouterr().err.startswith("error: http://127.0.0.1:9: no server answers there")
