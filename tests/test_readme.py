"""The README's Python API example runs as written and prints what its comments say."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def python_example() -> str:
    """The first ```python block of the README's "Python API" section."""
    section = (ROOT / "README.md").read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_python_api_example_runs_as_written(monkeypatch):
    monkeypatch.chdir(ROOT)
    code = python_example()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), {})
    lines = printed.getvalue().splitlines()
    expected = [m.group(1).strip() for m in re.finditer(r"print\(.*\)\s+# (.+)", code)]
    assert lines[: len(expected)] == expected  # "red", then "red" with the plan's anchors
    saved = re.search(r"\(([\d.]+)% saved\)", lines[-1])
    assert saved and float(saved.group(1)) > 0
