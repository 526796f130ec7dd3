"""The demo tokenizer: clean round trips, piecewise encoding equal to whole-text encoding, transformers loads it."""

import random
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from minilazy.demo.dataset import IMAGE_TOKENS, conversation_ids, conversation_text, tokenizer_corpus
from minilazy.demo.questions import QA, TRAINING_FAMILIES, describe, sample_questions
from minilazy.demo.scenes import make_scene
from minilazy.demo.tokenizer import BOS, EOS, IMAGE, SPECIAL_TOKENS, UNK, build_tokenizer, save_tokenizer
from minilazy.prompts import ImageLayout, build_prompt


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(tokenizer_corpus(400))


def test_special_tokens_and_bos(tokenizer):
    assert [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    ids = tokenizer.encode("What color is the circle?").ids
    assert ids[0] == tokenizer.token_to_id(BOS) and BOS not in tokenizer.decode(ids)


@pytest.mark.parametrize("which", ["built", "shipped"])
def test_answers_and_questions_round_trip_without_unknowns(tokenizer, which):
    if which == "shipped":  # what fine-tuning the shipped checkpoint on any training family encodes with
        tokenizer = Tokenizer.from_file(str(Path(__file__).parents[2] / "weights" / "demo" / "tokenizer.json"))
    unk = tokenizer.token_to_id(UNK)
    for seed in range(100):
        scene = make_scene(10_000 + seed)
        questions = sample_questions(scene, random.Random(seed), 8, TRAINING_FAMILIES)
        for qa in questions + [QA("describe", "Describe the image.", describe(scene))]:
            # answers follow "ASSISTANT:" and a space; the decoder drops that first space
            for text, expected in ((qa.question, qa.question), (" " + qa.answer, qa.answer)):
                ids = tokenizer.encode(text, add_special_tokens=False).ids
                assert unk not in ids, text
                assert tokenizer.decode(ids) == expected


def test_conversation_ids_equal_encoding_the_whole_text(tokenizer):
    scene = make_scene(5)
    qas = sample_questions(scene, random.Random(1), 5) + [QA("describe", "Describe the image.", describe(scene))]
    ids, mask = conversation_ids(tokenizer, qas)
    assert ids == tokenizer.encode(conversation_text(qas)).ids
    assert ids.count(tokenizer.token_to_id(IMAGE)) == IMAGE_TOKENS
    # the first turn is exactly the inference prompt
    prompt = build_prompt("llava", tokenizer, qas[0].question, ImageLayout(IMAGE_TOKENS))
    assert ids[: len(prompt)] == prompt
    answers = tokenizer.decode([i for i, m in zip(ids, mask) if m], skip_special_tokens=False)
    assert answers == " ".join(qa.answer + EOS for qa in qas)


def test_transformers_loads_the_saved_tokenizer(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    save_tokenizer(tokenizer, tmp_path, model_max_length=1024)
    hf = AutoTokenizer.from_pretrained(tmp_path)
    text = "USER: " + IMAGE * 3 + "\nHow many red circles are there? ASSISTANT:"
    assert hf(text)["input_ids"] == tokenizer.encode(text).ids
    assert (hf.bos_token, hf.eos_token, hf.pad_token) == ("<s>", "</s>", "<pad>")
    answer = tokenizer.encode(" small red circle at top left", add_special_tokens=False).ids
    assert hf.decode(answer + [hf.eos_token_id], skip_special_tokens=True) == "small red circle at top left"
