"""Prompt ids against transformers' LlavaProcessor, Idefics3Processor and chat templates.

Tiny BPE tokenizers are trained here with `tokenizers`: a Llama-like one (Metaspace, `<s>` added by
the post-processor) for LLaVA and a GPT-2-like byte-level one (no BOS, "\\n\\n" merged) for
SmolVLM / SmolLM2, each with the models' special tokens as added tokens.
"""

import numpy as np
import pytest
from PIL import Image
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import Idefics3Processor, LlavaProcessor, PreTrainedTokenizerFast
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil
from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

from minilazy.errors import InputError
from minilazy.image_processing.idefics3 import Idefics3ImageProcessor
from minilazy.prompts import ImageLayout, build_prompt, image_token_positions, prompt_text

CORPUS = [
    "USER: What is shown in this picture? ASSISTANT: A red square on a blue background.",
    "User: Describe the image.\n\nAssistant: There are two circles and one triangle.",
    "What colour is the big shape?\nHow many objects can you count?\n\nIt is green.",
    "system user assistant You are a helpful AI assistant named SmolLM, trained by Hugging Face",
] * 4 + ["Paragraph end.\n\n"] * 40
QUESTION = "What colour is the big shape?"

# SmolVLM-Instruct's chat template and SmolLM2-Instruct's (from its GGUF), verbatim.
SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
IDEFICS3_SPECIALS = ["<|im_start|>", "<|im_end|>", "<fake_token_around_image>", "<image>", "<end_of_utterance>",
                     "<global-img>"] + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]


def _llama_like() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tokenizer.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<s>", "</s>"]))
    tokenizer.add_special_tokens([AddedToken("<image>", normalized=False, special=True)])
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tokenizer


def _smollm_like() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in IDEFICS3_SPECIALS])
    return tokenizer


@pytest.fixture(scope="module")
def llama_tokenizer():
    return _llama_like()


@pytest.fixture(scope="module")
def smollm_tokenizer():
    tokenizer = _smollm_like()
    assert len(tokenizer.encode("\n\n").ids) == 1, "the test corpus should make '\\n\\n' one token"
    return tokenizer


def _image(width, height):
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.mark.parametrize("question", [QUESTION, "Describe the image.\nBe brief."])
def test_llava_ids_match_processor(llama_tokenizer, question):
    hf_tokenizer = PreTrainedTokenizerFast(tokenizer_object=llama_tokenizer, bos_token="<s>", eos_token="</s>",
                                           unk_token="<unk>")
    image_processor = LlavaImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=hf_tokenizer, patch_size=14,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1)
    expected = processor(images=_image(40, 30), text=f"USER: <image>\n{question} ASSISTANT:")["input_ids"][0]
    ids = build_prompt("llava", llama_tokenizer, question, ImageLayout(576))
    assert ids == list(expected)
    assert ids[0] == llama_tokenizer.token_to_id("<s>")
    positions = image_token_positions(ids, llama_tokenizer.token_to_id("<image>"))
    assert len(positions) == 576 and positions == list(range(positions[0], positions[0] + 576))


def test_llava_text_only(llama_tokenizer):
    ids = build_prompt("llava", llama_tokenizer, QUESTION)
    assert ids == llama_tokenizer.encode(f"USER: {QUESTION} ASSISTANT:").ids
    assert image_token_positions(ids, llama_tokenizer.token_to_id("<image>")) == []


def _idefics3_processor(smollm_tokenizer, split):
    hf_tokenizer = PreTrainedTokenizerFast(tokenizer_object=smollm_tokenizer, eos_token="<end_of_utterance>")
    image_processor = Idefics3ImageProcessorPil(size={"longest_edge": 128}, max_image_size={"longest_edge": 32},
                                                do_image_splitting=split)
    return Idefics3Processor(image_processor=image_processor, tokenizer=hf_tokenizer, image_seq_len=4,
                             chat_template=SMOLVLM_TEMPLATE)


@pytest.mark.parametrize("split,size", [(True, (200, 90)), (True, (90, 200)), (False, (200, 90))])
def test_idefics3_ids_match_processor(smollm_tokenizer, split, size):
    processor = _idefics3_processor(smollm_tokenizer, split)
    image = _image(*size)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    expected = processor(images=image, text=text)["input_ids"][0]

    tiles = Idefics3ImageProcessor(longest_edge=128, tile_size=32, do_image_splitting=split)(image)
    layout = ImageLayout(4, tiles.rows[0], tiles.cols[0])
    ids = build_prompt("idefics3", smollm_tokenizer, QUESTION, layout)
    assert ids == list(expected)
    n_tiles = tiles.pixel_values.shape[0]
    assert len(image_token_positions(ids, smollm_tokenizer.token_to_id("<image>"))) == 4 * n_tiles


def test_idefics3_text_only(smollm_tokenizer):
    processor = _idefics3_processor(smollm_tokenizer, True)
    messages = [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt_text("idefics3", QUESTION) == text
    assert build_prompt("idefics3", smollm_tokenizer, QUESTION) == list(processor(text=text)["input_ids"][0])


def test_chat_matches_smollm2_template(smollm_tokenizer):
    hf_tokenizer = PreTrainedTokenizerFast(tokenizer_object=smollm_tokenizer, chat_template=SMOLLM2_TEMPLATE)
    for messages, system in [([], None), ([{"role": "system", "content": "Be terse."}], "Be terse.")]:
        messages = messages + [{"role": "user", "content": QUESTION}]
        text = hf_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert prompt_text("chat", QUESTION, system=system) == text
        expected = hf_tokenizer(text, add_special_tokens=False)["input_ids"]
        assert build_prompt("chat", smollm_tokenizer, QUESTION, system=system) == list(expected)


def test_bad_prompts(llama_tokenizer, smollm_tokenizer):
    for kind, tokenizer in [("llava", llama_tokenizer), ("idefics3", smollm_tokenizer), ("chat", smollm_tokenizer)]:
        with pytest.raises(InputError, match="empty"):
            build_prompt(kind, tokenizer, "  \n")
    with pytest.raises(ValueError, match="unknown prompt kind"):
        build_prompt("gpt", llama_tokenizer, QUESTION)
    with pytest.raises(ValueError, match="cannot hold an image"):
        build_prompt("chat", smollm_tokenizer, QUESTION, ImageLayout(4))
    with pytest.raises(InputError, match="expected 576"):
        build_prompt("llava", llama_tokenizer, "what is <image>?", ImageLayout(576))
    for kind, tokenizer in [("llava", llama_tokenizer), ("idefics3", smollm_tokenizer)]:  # no image to fill it
        with pytest.raises(InputError, match="an earlier turn contains <image>, the model's image token"):
            build_prompt(kind, tokenizer, "what is <image>?")
    with pytest.raises(InputError, match="special token"):
        no_image_token = Tokenizer.from_str(llama_tokenizer.to_str().replace("<image>", "<picture>"))
        build_prompt("llava", no_image_token, QUESTION, ImageLayout(576))
    with pytest.raises(ValueError, match="invalid image layout"):
        ImageLayout(64, rows=2, cols=0)
