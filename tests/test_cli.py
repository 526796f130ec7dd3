"""`python cli.py` as a user runs it: answers, --stats, --help, and one-line errors for bad input.

Runs that check what a user sees end to end are subprocesses (the repository's cli.py under this
Python); the bad-input cases call `cli.main` in process, where an uncaught exception fails the test as
a traceback would. All on a tiny LLaVA checkpoint saved with transformers, with a character-level
tokenizer.json holding `<image>`.
"""

from __future__ import annotations

import json
import os
import shutil
import shlex
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cli
from minilazy.commands import COMMANDS
from minilazy.commands.options import command_line
from minilazy.errors import InputError
from minilazy.generate import generate
from minilazy.pipeline import Pipeline
from minilazy.sampler import SamplingParams
from tests.runtime.tiny_models import TOKENIZER_VOCAB, save_llava, save_tokenizer

REPO = Path(__file__).resolve().parents[1]
QUESTION = "How many?"
NEW_TOKENS = 8
FLAGS = ["--image", "--prompt", "--model", "--backend", "--dtype", "--max-new-tokens", "--temperature", "--top-p",
         "--top-k", "--seed", "--lazy", "--lazy-ratio", "--lazy-method", "--lazy-scope", "--q-cache-depth",
         "--no-fast-decode", "--fastv-layer", "--fastv-ratio", "--vtw-layer", "--vtw-threshold", "--mass-correction",
         "--exact-image-rows", "--stats"]


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "cli.py", *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def run_in_process(capsys, *args) -> tuple[int, str, str]:
    """`python cli.py ARGS` as `cli.main` runs it: exit status, stdout, stderr."""
    code = cli.main(list(map(str, args)))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The tiny model, a good image, and every kind of bad input."""
    root = tmp_path_factory.mktemp("cli")
    model = root / "model"
    save_llava(model, image_size=28, patch=7, vision_hidden=32, vision_layers=2,
               text=dict(vocab=TOKENIZER_VOCAB, hidden=32, layers=2))
    save_tokenizer(model)
    pixels = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "image.png")
    Image.fromarray(pixels).save(root / "image.jpg")
    jpeg = (root / "image.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "not_an_image.png").write_text("this is text, not a picture\n")
    (root / "huge.png").write_bytes(png_header_only(8000, 7000))  # 56 Mpixels claimed, above the 50 M limit
    Image.new("RGB", (2_000_000, 1)).save(root / "strip.png")  # resized to 28 rows: 56 Mpixels wide
    unreadable = root / "unreadable.png"
    shutil.copy(root / "image.png", unreadable)
    unreadable.chmod(0)
    if os.access(unreadable, os.R_OK):  # root reads anything: a directory cannot be read as an image either
        unreadable = root / "directory.png"
        unreadable.mkdir()
    return dict(root=root, model=model, image=root / "image.png", unreadable=unreadable)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with almost no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + \
        chunk(b"IEND", b"")


def model_variant(files, name: str, drop: str | None = None, config=None, weights: bytes | None = None,
                  write: dict[str, str] | None = None) -> Path:
    """A copy of the tiny model with a file removed, its config edited, its weights replaced, or files written."""
    path = files["root"] / name
    if not path.exists():
        shutil.copytree(files["model"], path)
        if drop:
            (path / drop).unlink()
        if config:
            data = json.loads((path / "config.json").read_text())
            config(data)
            (path / "config.json").write_text(json.dumps(data))
        if weights is not None:
            (path / "model.safetensors").write_bytes(weights)
        for file_name, text in (write or {}).items():
            (path / file_name).write_text(text)
    return path


def test_answer_streams_the_greedy_tokens(files):
    pipeline = Pipeline.load(files["model"], backend="torch")
    request = pipeline.request(QUESTION, files["image"])
    tokens = generate(pipeline.model, [request], SamplingParams(NEW_TOKENS), stop_ids=pipeline.stop_ids).tokens[0]
    expected = pipeline.decode(tokens)
    assert expected.strip(), "the tiny model should answer with some visible text"
    result = run_cli("--model", files["model"], "--image", files["image"], "--prompt", QUESTION,
                     "--max-new-tokens", NEW_TOKENS, "--backend", "torch")
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected + "\n"
    assert result.stderr == ""


def test_stats(files):
    pipeline = Pipeline.load(files["model"], backend="torch")
    request = pipeline.request(QUESTION, files["image"])
    stats = generate(pipeline.model, [request], SamplingParams(NEW_TOKENS), stop_ids=pipeline.stop_ids).stats
    result = run_cli("--model", files["model"], "--image", files["image"], "--prompt", QUESTION,
                     "--max-new-tokens", NEW_TOKENS, "--stats")
    assert result.returncode == 0, result.stderr
    report = result.stdout + result.stderr
    lines = {line.split()[0]: line for line in report.splitlines() if line.strip()}
    assert " ms " in lines["prefill"] and "tokens/s" in lines["prefill"], report
    assert " ms " in lines["decode"] and "tokens/s" in lines["decode"], report
    assert f"{stats.kv_cache_bytes:,} bytes" in lines["KV"], report
    assert stats.kv_cache_bytes > 0


def test_stats_of_vtw(files, capsys):
    code, _, err = run_in_process(capsys, "--model", files["model"], "--image", files["image"], "--prompt", QUESTION,
                                  "--max-new-tokens", NEW_TOKENS, "--vtw-layer", "1", "--stats")
    lines = {line.split()[0]: line for line in err.splitlines() if line.strip()}
    assert code == 0 and "layer 1, every image token withdrawn" in lines["VTW"], err
    assert "KV cache saved" in err


def test_help_mentions_every_flag_and_command():
    result = run_cli("--help")
    assert result.returncode == 0
    for flag in FLAGS:
        assert flag in result.stdout, f"--help does not mention {flag}"
    for command in ("calibrate (choose", "eval (demo", "study (lazy", "perplexity (text", "bench (speed",
                    "serve (an", "loadtest (load", "compare-studies (several"):
        assert command in " ".join(result.stdout.split()), f"--help does not name the {command.split()[0]} command"
    assert len(COMMANDS) == 9, "a new command needs its line in the generate --help epilog"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_flag_of_every_command_is_explained(command):
    actions = [a for a in COMMANDS[command].parser()._actions if a.option_strings and a.dest != "help"]
    assert actions
    for action in actions:
        assert action.help and len(action.help) > 10, f"{command} {action.option_strings[0]} has no help text"


def test_unknown_command_is_one_line_error():
    result = run_cli("calibrat", "--model", "x")
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown command 'calibrat'") and len(result.stderr.splitlines()) == 1


def _context_window_of_30(config):
    config["text_config"]["max_position_embeddings"] = 30  # the prompt alone is 41 tokens


def _mistral(config):
    config["model_type"] = "mistral"


# name -> (arguments replacing the defaults, what the message must say)
BAD_INPUTS = {
    "missing image": (lambda f: {"--image": f["root"] / "missing.png"}, "not found"),
    "unreadable image": (lambda f: {"--image": f["unreadable"]}, "cannot read the file"),
    "not an image": (lambda f: {"--image": f["root"] / "not_an_image.png"}, "not an image"),
    "truncated image": (lambda f: {"--image": f["root"] / "truncated.jpg"}, "truncated"),
    "too many pixels": (lambda f: {"--image": f["root"] / "huge.png"}, "above the limit"),
    "too thin to resize": (lambda f: {"--image": f["root"] / "strip.png"}, "too unequal"),
    "empty prompt": (lambda f: {"--prompt": "  "}, "empty"),
    "lazy scope without a ratio": (lambda f: {"--lazy-scope": "all"}, "only apply with --lazy-ratio"),
    "depth without a ratio": (lambda f: {"--q-cache-depth": "2"}, "only apply with --lazy-ratio"),
    "method without a ratio": (lambda f: {"--lazy-method": "rank"}, "only apply with --lazy-ratio"),
    "VTW and FastV": (lambda f: {"--vtw-layer": "1", "--fastv-layer": "1", "--fastv-ratio": "0.5"}, "not both"),
    "VTW past the last layer": (lambda f: {"--vtw-layer": "3"}, "past the model's last layer"),
    "VTW threshold without auto": (lambda f: {"--vtw-layer": "1", "--vtw-threshold": "0.1"}, "--vtw-layer auto"),
    "no Q Cache slot": (lambda f: {"--lazy-ratio": "0.5", "--q-cache-depth": "0"}, "at least 1"),
    "longer than the context": (lambda f: {"--model": model_variant(f, "short", config=_context_window_of_30)},
                                "context window"),
    "no config": (lambda f: {"--model": model_variant(f, "no_config", drop="config.json")}, "config.json"),
    "no weights": (lambda f: {"--model": model_variant(f, "no_weights", drop="model.safetensors")}, "weights"),
    "no tokenizer": (lambda f: {"--model": model_variant(f, "no_tokenizer", drop="tokenizer.json")}, "tokenizer"),
    "corrupt weights": (lambda f: {"--model": model_variant(f, "corrupt", weights=b"\x10\0\0\0\0\0\0\0{\"a\":")},
                        "safetensors"),
    "unsupported model": (lambda f: {"--model": model_variant(f, "mistral", config=_mistral)}, "mistral"),
    "malformed generation config": (lambda f: {"--model": model_variant(
        f, "bad_generation", write={"generation_config.json": "{"})}, "generation_config.json"),
    "unsupported preprocessing": (lambda f: {"--model": model_variant(
        f, "padded", write={"preprocessor_config.json": '{"do_pad": true}'})}, "do_pad"),
    "generation config not an object": (lambda f: {"--model": model_variant(
        f, "list_generation", write={"generation_config.json": "[]"})}, "expected a JSON object"),
    "preprocessor config not an object": (lambda f: {"--model": model_variant(
        f, "list_preprocessor", write={"preprocessor_config.json": "[1]"})}, "expected a JSON object"),
    "unknown resampling filter": (lambda f: {"--model": model_variant(
        f, "resample", write={"preprocessor_config.json": '{"resample": 99}'})}, "resampling filter"),
    "malformed size entry": (lambda f: {"--model": model_variant(
        f, "bad_size", write={"preprocessor_config.json": '{"size": {"width": 3}}'})}, "shortest_edge"),
}


def test_triton_backend_without_a_gpu_is_an_input_error(files, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU runs the triton backend")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(InputError, match="needs a CUDA GPU"):
        Pipeline.load(files["model"], backend="triton")


def test_no_fast_decode_without_lazy_layers_is_an_input_error(files, capsys):
    code, _, err = run_in_process(capsys, "--model", files["model"], "--image", files["image"], "--prompt", QUESTION,
                                  "--no-fast-decode")
    assert code == 2 and err.startswith("error: --no-fast-decode only applies"), err


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_error(files, case, capsys):
    overrides, says = BAD_INPUTS[case]
    args = {"--model": files["model"], "--image": files["image"], "--prompt": QUESTION, "--max-new-tokens": 4}
    args.update(overrides(files))
    code, out, err = run_in_process(capsys, *[part for pair in args.items() for part in pair])
    assert code == 2, f"{case}: exit status {code}, stderr:\n{err}"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{case}: stderr is not one error line:\n{err}"
    if case == "unreadable image" and f"{files['unreadable']}".endswith("directory.png"):
        says = "not a regular file"
    assert says in lines[0], f"{case}: {lines[0]!r} does not say {says!r}"
    assert out.strip() == ""


def test_bad_input_from_the_shell_is_one_line_without_a_traceback(files):
    result = run_cli("--model", files["root"] / "missing", "--prompt", QUESTION)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_recorded_command_reruns_the_same_arguments():
    argv = ["--model", "out/m", "--batch-sizes", "1", "16", "--no-transformers", "--out", str(Path.cwd() / "out/b")]
    args = COMMANDS["bench"].parser().parse_args(argv)
    command = command_line("bench", args)  # the absolute path inside the working directory is shown relative
    assert command == "python cli.py bench --model out/m --batch-sizes 1 16 --no-transformers --out out/b"
    args.out = "out/b"
    assert COMMANDS["bench"].parser().parse_args(command.split()[3:]) == args


@pytest.mark.parametrize("argv", [["--no-mass-correction", "--no-exact-image-rows"], ["--lazy-method", "rank"]])
def test_recorded_command_writes_switches_as_switches(argv):
    """A `--x / --no-x` switch is recorded as the flag that gives its value, so the command parses back."""
    args = COMMANDS["study"].parser().parse_args([*argv, "--out", "out/s"])
    command = command_line("study", args)
    assert command == shlex.join(["python", "cli.py", "study", *argv, "--out", "out/s"])
    assert COMMANDS["study"].parser().parse_args(command.split()[3:]) == args
