"""The VQA answer normalisation rule by rule, exact match, and token F1 (minilazy/study/normalize.py)."""

import pytest

from minilazy.study.normalize import answer_score, exact_match, normalize_answer, token_f1


@pytest.mark.parametrize("rule, text, normalised", [
    ("whitespace", "  red\tand\nblue  ", "red and blue"),
    ("lower case", "Red", "red"),
    ("punctuation beside a space is deleted", "hello, world", "hello world"),
    ("punctuation inside a word becomes a space", "t-shirt", "t shirt"),
    ("a slash inside a word becomes a space", "black/white", "black white"),
    ("a digit comma deletes every mark", "1,000 t-shirts", "1000 tshirts"),
    ("brackets and quotes", '"(yes)"', "yes"),
    ("question and exclamation marks", "yes!", "yes"),
    ("the apostrophe is kept", "it's", "it's"),
    ("a period is removed", "Yes.", "yes"),
    ("a period before a digit stays", "2.5", "2.5"),
    ("number words become digits", "Two dogs", "2 dogs"),
    ("none and zero are 0", "none zero ten", "0 0 10"),
    ("number words past ten stay", "eleven", "eleven"),
    ("articles are dropped", "The cat on a mat", "cat on mat"),
    ("an is an article", "an apple", "apple"),
    ("an answer of only an article is empty", "A", ""),
    ("a missing apostrophe comes back", "dont", "don't"),
    ("contractions after lower case", "Youre", "you're"),
    ("i'm, from the official table's upper-case entry", "Im", "i'm"),
    ("lets, from the official table's slip", "lets", "let's"),
    ("one of two apostrophes missing", "shouldnt've", "shouldn't've"),
    ("the other one missing", "shouldn'tve", "shouldn't've"),
    ("both missing: no entry in the official table", "shouldntve", "shouldntve"),
    ("a real word that is no contraction", "well", "well"),
])
def test_normalisation_rules(rule, text, normalised):
    assert normalize_answer(text) == normalised, rule


@pytest.mark.parametrize("answer, accepted, correct", [
    ("Two.", ["2"], True),
    ("the red one", ["red 1"], True),
    ("red", ["blue", "Red"], True),
    ("reddish", ["red"], False),
    ("red car", ["red"], False),  # exact match, not containment
])
def test_exact_match_after_normalisation(answer, accepted, correct):
    assert exact_match(answer, accepted) is correct
    assert answer_score(answer, accepted, long=False) == float(correct)


@pytest.mark.parametrize("answer, reference, f1", [
    ("a large red circle", "large red circle", 1.0),  # the article is not a word that counts
    ("large red circle", "small red circle", 2 / 3),  # 2 of 3 words each way
    ("red circle", "large red circle at top", 2 * (1.0 * 0.4) / 1.4),  # precision 1, recall 2/5
    ("red red", "red", 2 * (0.5 * 1.0) / 1.5),  # a word counts as often as the reference has it
    ("blue square", "red circle", 0.0),
    ("the", "a", 1.0),  # both empty once normalised
    ("the", "red", 0.0),
])
def test_token_f1(answer, reference, f1):
    assert token_f1(answer, reference) == pytest.approx(f1)


def test_a_long_answer_scores_its_best_f1():
    assert answer_score("large red circle", ["blue square", "small red circle"], long=True) == pytest.approx(2 / 3)
