"""The JSON settings files' reader and writer shared by loaders, converters and commands."""

import pytest

from minilazy.config import read_json_object, write_json
from minilazy.errors import InputError


def test_write_json_creates_the_folder_and_round_trips_non_ascii(tmp_path):
    path = tmp_path / "a" / "b" / "tokenizer_config.json"
    data = {"chat_template": "<|im_start|>… ünïcode", "ids": [1, 2], "nested": {"x": None}}
    write_json(path, data)
    text = path.read_text(encoding="utf-8")
    assert "…" in text and text.endswith("}\n")
    assert read_json_object(path) == data


@pytest.mark.parametrize("content, message", [("{not json", "not valid JSON"), ("[1, 2]", "expected a JSON object")])
def test_read_json_object_names_the_file_when_it_is_not_an_object(tmp_path, content, message):
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as info:
        read_json_object(path)
    assert str(path) in str(info.value)
