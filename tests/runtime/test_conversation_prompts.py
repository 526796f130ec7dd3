"""Conversations of several turns against the chat templates of LLaVA-1.5, SmolVLM, SmolLM2 and
Qwen2-VL: the prompt text equals what `apply_chat_template` renders, with the image in the first user
turn or in the question, and malformed histories are refused."""

import pytest
from transformers import PreTrainedTokenizerFast

from minilazy.errors import InputError
from minilazy.prompts import ImageLayout, Turn, build_prompt, prompt_text
from tests.runtime.test_prompts import SMOLLM2_TEMPLATE, _idefics3_processor, _image, _smollm_like
from tests.runtime.tiny_qwen import QWEN2_VL_CHAT_TEMPLATE

# llava-hf/llava-1.5-*-hf's chat_template.json, verbatim.
LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}"
    "{% endif %}{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', "
    "'image') %}{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}"
    "{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
TURNS = ("What colour is the big shape?", "It is green.", "How many objects can you count?")


def messages(image_turn: int | None) -> list[dict]:
    """The three turns as transformers' chat messages, the image first in user turn `image_turn`."""
    out = []
    for i, text in enumerate(TURNS):
        content = [{"type": "text", "text": text}]
        if i == image_turn:
            content.insert(0, {"type": "image"})
        out.append({"role": ("user", "assistant")[i % 2], "content": content})
    return out


def history(image_turn: int | None) -> tuple[Turn, ...]:
    return (Turn("user", TURNS[0], image=image_turn == 0), Turn("assistant", TURNS[1]))


def rendered(template: str, conversation: list[dict]) -> str:
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=_smollm_like(), chat_template=template)
    return tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)


@pytest.mark.parametrize("image_turn", [0, 2, None])
@pytest.mark.parametrize("kind, template", [("llava", LLAVA_TEMPLATE), ("qwen2_vl", QWEN2_VL_CHAT_TEMPLATE)])
def test_several_turns_match_the_vlm_templates(kind, template, image_turn):
    layout = None if image_turn is None else ImageLayout(1)  # one image token: as the template writes it
    text = prompt_text(kind, TURNS[2], layout, history=history(image_turn))
    assert text == rendered(template, messages(image_turn))


@pytest.mark.parametrize("image_turn", [0, 2])
def test_several_turns_match_smolvlm_processor(image_turn):
    tokenizer = _smollm_like()
    processor = _idefics3_processor(tokenizer, split=False)
    text = processor.apply_chat_template(messages(image_turn), add_generation_prompt=True)
    expected = processor(images=_image(90, 60), text=text)["input_ids"][0]
    ids = build_prompt("idefics3", tokenizer, TURNS[2], ImageLayout(4), history=history(image_turn))
    assert ids == list(expected)
    assert prompt_text("idefics3", TURNS[2], history=history(None)) == processor.apply_chat_template(
        messages(None), add_generation_prompt=True)


def test_several_turns_match_smollm2_template():
    conversation = [{"role": m["role"], "content": m["content"][0]["text"]} for m in messages(None)]
    assert prompt_text("chat", TURNS[2], history=history(None)) == rendered(SMOLLM2_TEMPLATE, conversation)
    with_system = [{"role": "system", "content": "Be terse."}, *conversation]
    assert prompt_text("chat", TURNS[2], system="Be terse.", history=history(None)) == rendered(SMOLLM2_TEMPLATE,
                                                                                               with_system)


@pytest.mark.parametrize("turns, layout, match", [
    ((Turn("assistant", "hi"), Turn("user", "yes")), None, "turn 0 of the conversation is 'assistant'"),
    ((Turn("user", "hi"),), None, "must end with an assistant turn"),
    ((Turn("user", "hi", image=True), Turn("assistant", "ok")), None, "carries an image"),
    ((Turn("user", "hi"), Turn("assistant", "ok", image=True)), ImageLayout(1), "carries an image"),
    ((Turn("user", "a", image=True), Turn("assistant", "b"), Turn("user", "c", image=True), Turn("assistant", "d")),
     ImageLayout(1), "at most one image"),
])
def test_malformed_histories_are_refused(turns, layout, match):
    with pytest.raises(InputError, match=match):
        prompt_text("llava", "and now?", layout, history=turns)


@pytest.mark.parametrize("kind, template", [("llava", LLAVA_TEMPLATE), ("qwen2_vl", QWEN2_VL_CHAT_TEMPLATE)])
def test_an_image_alone_in_a_user_turn_matches_the_templates(kind, template):
    conversation = [{"role": "user", "content": [{"type": "image"}]},
                    {"role": "assistant", "content": [{"type": "text", "text": TURNS[1]}]},
                    {"role": "user", "content": [{"type": "text", "text": TURNS[2]}]}]
    turns = (Turn("user", "", image=True), Turn("assistant", TURNS[1]))
    assert prompt_text(kind, TURNS[2], ImageLayout(1), history=turns) == rendered(template, conversation)


def test_an_image_after_its_text_keeps_that_order_where_the_template_does():
    """SmolVLM and Qwen2-VL write a message's parts in order; LLaVA writes images first whatever the order."""
    text_then_image = [{"role": "user", "content": [{"type": "text", "text": TURNS[0]}, {"type": "image"}]}]
    for kind, template in [("qwen2_vl", QWEN2_VL_CHAT_TEMPLATE), ("llava", LLAVA_TEMPLATE)]:
        assert prompt_text(kind, TURNS[0], ImageLayout(1), text_first=True) == rendered(template, text_then_image)
    tokenizer = _smollm_like()
    processor = _idefics3_processor(tokenizer, split=False)
    text = processor.apply_chat_template(text_then_image, add_generation_prompt=True)
    expected = processor(images=_image(90, 60), text=text)["input_ids"][0]
    assert build_prompt("idefics3", tokenizer, TURNS[0], ImageLayout(4), text_first=True) == list(expected)
    turns = (Turn("user", TURNS[0], image=True, text_first=True), Turn("assistant", TURNS[1]))
    conversation = [*text_then_image, *messages(None)[1:]]
    assert prompt_text("qwen2_vl", TURNS[2], ImageLayout(1), history=turns) == rendered(QWEN2_VL_CHAT_TEMPLATE,
                                                                                         conversation)
