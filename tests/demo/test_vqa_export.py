"""The demo's held-out questions exported as a VQA data file read back as `study --data` reads it."""

from minilazy.demo.evaluate import held_out_questions
from minilazy.demo.vqa_export import export_questions
from minilazy.study.vqa_data import load_vqa_data


def test_exported_questions_read_back(tmp_path):
    items = load_vqa_data(export_questions(6, tmp_path, seed_offset=2))
    expected = held_out_questions(6, seed_offset=2)
    assert [(item.question, item.answers, item.category) for item in items] == \
        [(qa.question, (qa.answer,), qa.family) for _, qa in expected]
    assert [item.long for item in items] == [qa.family == "describe" for _, qa in expected]
    assert items[0].image == tmp_path / "scenes" / f"{expected[0][0]}.png"
