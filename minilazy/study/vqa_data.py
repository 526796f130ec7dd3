"""A VQA data set from a JSONL file, every line checked before any model work.

Each non-blank line is one JSON object:

    {"image": "images/0001.png", "question": "What color is the bus?", "answers": ["red", "dark red"]}

- `image`: the image file, relative to the JSONL file's folder (an absolute path also works);
- `question`: the question, asked through the model's own prompt layout;
- `answers`: a non-empty list of accepted answers (strings);
- `long` (optional, default false): a free-form answer, scored by token F1 instead of exact match;
- `category` (optional): a label the study reports a score for, as it does the demo's question families.

Other fields (ids, sources) are ignored. `load_vqa_data` reads and checks every line (its fields, and
that its image opens and decodes) and raises `InputError` naming the file and the line of the first
problem, so a bad line ends the command before the model is loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from minilazy.errors import InputError
from minilazy.images import load_image

FORMAT = 'each line {"image": PATH, "question": TEXT, "answers": [TEXT, ...]}, optionally "long" and "category"'


@dataclass(frozen=True)
class VqaItem:
    """One question of the data set: its image file, the question, the accepted answers, how it is scored."""

    line: int
    image: Path
    question: str
    answers: tuple[str, ...]
    long: bool = False
    category: str | None = None


def _text(entry: dict, key: str, required: bool) -> str | None:
    value = entry.get(key)
    if value is None and not required:
        return None
    if value is None:
        raise ValueError(f'no "{key}" field ({FORMAT})')
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f'"{key}" must be a non-empty string, got {json.dumps(value)}')
    return value


def _answers(entry: dict) -> tuple[str, ...]:
    answers = entry.get("answers")
    if answers is None:
        raise ValueError(f'no "answers" field ({FORMAT})')
    if not isinstance(answers, list):
        raise ValueError(f'"answers" must be a list of strings, got {json.dumps(answers)}')
    if not answers:
        raise ValueError('"answers" is empty: give at least one accepted answer')
    for answer in answers:
        if not isinstance(answer, str) or not answer.strip():
            raise ValueError(f'every entry of "answers" must be a non-empty string, got {json.dumps(answer)}')
    return tuple(answers)


def parse_line(text: str, line: int, folder: Path) -> VqaItem:
    """The item of one line (its image not yet opened); ValueError says what is wrong with it."""
    try:
        entry = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"not valid JSON ({err.msg}, column {err.colno})") from None
    if not isinstance(entry, dict):
        raise ValueError(f"expected a JSON object, got {type(entry).__name__}")
    long = entry.get("long", False)
    if not isinstance(long, bool):
        raise ValueError(f'"long" must be true or false, got {json.dumps(long)}')
    return VqaItem(line, folder / _text(entry, "image", True), _text(entry, "question", True), _answers(entry),
                   long, _text(entry, "category", False))


def load_vqa_data(path: str | Path, limit: int | None = None) -> list[VqaItem]:
    """The items of the JSONL file `path` (its first `limit` when given), every one checked and its image decoded."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such data file")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # a byte-order mark is no JSON
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read it as UTF-8 text ({err})") from None
    items, opened = [], set()
    for number, text in enumerate(lines, start=1):
        if limit is not None and len(items) == limit:
            break
        if not text.strip():
            continue
        try:
            item = parse_line(text, number, path.parent)
            if item.image not in opened:  # fails here, naming the line, rather than in the middle of the study
                load_image(item.image)
                opened.add(item.image)
        except ValueError as err:  # InputError included
            raise InputError(f"{path}:{number}: {err}") from None
        items.append(item)
    if not items:
        raise InputError(f"{path}: no questions in the file ({FORMAT})")
    return items
