"""Scoring answers as VQA evaluations do: the official VQA eval's answer normalisation, exact match, token F1.

`normalize_answer` applies the processing of the official VQA evaluation (vqaEval.py of the VQA
API), in its order:

1. newlines and tabs become spaces, outer whitespace is stripped;
2. punctuation, each of ; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !, is deleted where it stands next
   to a space anywhere in the answer, or where the answer has a comma between two digits ("1,000"
   -> "1000"); otherwise replaced by a space ("t-shirt" -> "t shirt"); the apostrophe is kept;
3. a period is removed unless a digit follows it ("yes." -> "yes", "2.5" stays);
4. lower case, split into words;
5. the number words none, zero, one ... ten become the digits 0 ... 10;
6. the articles a, an, the are dropped;
7. contractions written without an apostrophe get it back ("dont" -> "don't", "youre" ->
   "you're"; a two-apostrophe form missing one of them: "shouldnt've" -> "shouldn't've").

Where the official table has slips, the rule is applied as it was meant: its entries "Im", "Ive",
"Id've" are upper case and never match the lower-cased words, so here "im", "ive", "id've" map; its
"let's" and "she's" entries map to themselves and "somebody'd" the wrong way round, so here
"lets", "shes" and "somebodyd" map. The official eval normalises only when the human answers
disagree; here every answer and every prediction is normalised.

A short answer is correct when its normalised form equals an accepted answer's (exact match after
normalisation; not the VQA 3-of-10 soft accuracy). A long answer scores the best token F1 (SQuAD's:
the harmonic mean of the shared words' precision and recall) against the accepted answers, on the
normalised words.
"""

from __future__ import annotations

import re
from collections import Counter

PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
               "?", "!")
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = frozenset(("a", "an", "the"))
# The official table's contractions, each in its full form: the forms missing one apostrophe map to it.
CONTRACTIONS = (
    "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't he'd "
    "he'd've he's how'd how'll how's i'd've i'm i've isn't it'd it'd've it'll let's ma'am mightn't mightn't've "
    "might've mustn't must've needn't not've o'clock oughtn't 'ow's'at shan't she'd've she's should've shouldn't "
    "shouldn't've somebody'd somebody'd've somebody'll somebody's someone'd someone'd've someone'll someone's "
    "something'd something'd've something'll that's there'd there'd've there're there's they'd they'd've they'll "
    "they're they've 'twas wasn't we'd've we've weren't what'll what're what's what've when's where'd where's "
    "where've who'd who'd've who'll who's who've why'll why're why's won't would've wouldn't wouldn't've y'all "
    "y'all'll y'all'd've you'd you'd've you'll you're you've"
).split()
_DIGIT_COMMA = re.compile(r"\d,\d")
_PERIOD = re.compile(r"\.(?!\d)")


def _missing_one_apostrophe(word: str) -> list[str]:
    return [word[:i] + word[i + 1:] for i, char in enumerate(word) if char == "'"]


RESTORED = {short: full for full in CONTRACTIONS for short in _missing_one_apostrophe(full)}


def _punctuation(text: str) -> str:
    """Rules 2 and 3: punctuation deleted or turned into a space, periods removed unless before a digit."""
    out = text
    delete_all = _DIGIT_COMMA.search(text) is not None
    for mark in PUNCTUATION:
        beside_space = mark + " " in text or " " + mark in text
        out = out.replace(mark, "" if beside_space or delete_all else " ")
    return _PERIOD.sub("", out)


def normalize_answer(text: str) -> str:
    """The answer as the VQA evaluation compares it (the rules in the module docstring)."""
    text = _punctuation(text.replace("\n", " ").replace("\t", " ").strip())
    words = (NUMBER_WORDS.get(word, word) for word in text.lower().split())
    return " ".join(RESTORED.get(word, word) for word in words if word not in ARTICLES)


def exact_match(answer: str, accepted: list[str]) -> bool:
    """Whether `answer` equals one of the `accepted` answers once both are normalised."""
    return normalize_answer(answer) in {normalize_answer(a) for a in accepted}


def token_f1(answer: str, reference: str) -> float:
    """Token F1 of `answer` against `reference` over their normalised words (1.0 when both have none)."""
    predicted, expected = normalize_answer(answer).split(), normalize_answer(reference).split()
    if not predicted or not expected:
        return float(predicted == expected)
    shared = sum((Counter(predicted) & Counter(expected)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(predicted), shared / len(expected)
    return 2 * precision * recall / (precision + recall)


def answer_score(answer: str, accepted: list[str], long: bool) -> float:
    """1.0 or 0.0 by exact match for a short answer; the best token F1 against `accepted` for a long one."""
    if long:
        return max(token_f1(answer, reference) for reference in accepted)
    return float(exact_match(answer, accepted))
