"""Prompt building: a question (and an image layout) -> the token ids a model is prefilled with.

Four layouts, each giving exactly the ids transformers gives with the same tokenizer.json:
- "llava": `USER: <image>\\n{question} ASSISTANT:` (LLaVA-1.5), `<image>` repeated once per image
  feature (576 for CLIP ViT-L/14-336), as `LlavaProcessor` expands it;
- "idefics3": SmolVLM's chat template, `<|im_start|>User:<image>{question}<end_of_utterance>\\nAssistant:`,
  the `<image>` expanded per tile as `Idefics3Processor` does (see `idefics3_image_text`);
- "chat": ChatML for text-only SmolLM2-style models, as SmolLM2's chat template renders it with
  add_generation_prompt=True (including its default system message);
- "qwen2_vl": the ChatML chat template of Qwen2-VL and Qwen2.5-VL (the same in both) with
  add_generation_prompt=True, `<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n`
  `<|vision_start|><|image_pad|>...<|vision_end|>{question}<|im_end|>\\n<|im_start|>assistant\\n`, the pad
  repeated once per merged patch (`t*h*w / merge_size**2`), as `Qwen2VLProcessor` expands it.
The expanded text is encoded in one piece with the tokenizer, so BOS handling (the tokenizer.json
post-processor: `<s>` for LLaVA, none for SmolVLM) and merges across piece boundaries ("\\n\\n")
are the tokenizer's own, as in transformers.
"""

from dataclasses import dataclass

from tokenizers import Tokenizer

from minilazy.errors import InputError

IMAGE_TOKEN = "<image>"
FAKE_IMAGE_TOKEN = "<fake_token_around_image>"
GLOBAL_IMAGE_TOKEN = "<global-img>"
QWEN_IMAGE_TOKEN = "<|image_pad|>"
SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
QWEN_SYSTEM = "You are a helpful assistant."
KINDS = ("llava", "idefics3", "chat", "qwen2_vl")
IMAGE_TOKENS = {"llava": IMAGE_TOKEN, "idefics3": IMAGE_TOKEN, "qwen2_vl": QWEN_IMAGE_TOKEN}  # per image kind
SYSTEM_KINDS = ("chat", "qwen2_vl")  # the layouts with a system message (ChatML)


@dataclass(frozen=True)
class ImageLayout:
    """How one image appears in the prompt: `tokens_per_tile` image tokens per tile.

    LLaVA: one tile (rows = cols = 0), tokens_per_tile = image features (576).
    Qwen2-VL: one tile (rows = cols = 0), tokens_per_tile = merged patches of the image.
    Idefics3: rows x cols tiles plus the global image (rows = cols = 0: the global image only),
    tokens_per_tile = image_seq_len (64 for SmolVLM).
    """

    tokens_per_tile: int
    rows: int = 0
    cols: int = 0

    def __post_init__(self):
        if self.tokens_per_tile < 1 or self.rows < 0 or self.cols < 0 or (self.rows == 0) != (self.cols == 0):
            raise ValueError(
                f"invalid image layout {self}: need tokens_per_tile >= 1 and rows, cols both 0 or both >= 1"
            )


def idefics3_image_text(layout: ImageLayout) -> str:
    """The text that replaces one `<image>` in an Idefics3 prompt (Idefics3Processor.replace_image_token)."""
    tile_tokens = IMAGE_TOKEN * layout.tokens_per_tile
    global_image = f"{FAKE_IMAGE_TOKEN}{GLOBAL_IMAGE_TOKEN}{tile_tokens}{FAKE_IMAGE_TOKEN}"
    if layout.rows == 0:
        return global_image
    rows = [
        "".join(f"{FAKE_IMAGE_TOKEN}<row_{r + 1}_col_{c + 1}>{tile_tokens}" for c in range(layout.cols)) + "\n"
        for r in range(layout.rows)
    ]
    return "".join(rows) + "\n" + global_image


def prompt_text(kind: str, question: str, image_layout: ImageLayout | None = None, system: str | None = None) -> str:
    """The full prompt as text, image tokens already expanded."""
    if kind not in KINDS:
        raise ValueError(f"unknown prompt kind {kind!r}; expected one of {', '.join(KINDS)}")
    if not question.strip():
        raise InputError("the prompt is empty: give a question or instruction")
    if kind == "chat":
        if image_layout is not None:
            raise ValueError("the text-only chat prompt cannot hold an image")
        return chatml(SMOLLM2_SYSTEM if system is None else system, question)
    if kind == "qwen2_vl":
        image = ""
        if image_layout is not None:
            if image_layout.rows:
                raise ValueError("a Qwen2-VL image is one tile: its layout has no rows and columns")
            image = f"<|vision_start|>{QWEN_IMAGE_TOKEN * image_layout.tokens_per_tile}<|vision_end|>"
        return chatml(QWEN_SYSTEM if system is None else system, image + question)
    if system is not None:
        raise InputError(f"the {kind} prompt has no system message")
    if kind == "llava":
        image = "" if image_layout is None else IMAGE_TOKEN * image_layout.tokens_per_tile + "\n"
        return f"USER: {image}{question} ASSISTANT:"
    # SmolVLM's chat template: "User:" directly before an image, "User: " before text.
    user = "User: " if image_layout is None else "User:" + idefics3_image_text(image_layout)
    return f"<|im_start|>{user}{question}<end_of_utterance>\nAssistant:"


def chatml(system: str, user: str) -> str:
    """A ChatML system and user turn, then the assistant's turn opened (add_generation_prompt=True)."""
    return f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


def _expected_image_tokens(kind: str, layout: ImageLayout | None) -> int:
    if layout is None:
        return 0
    tiles = 1 if kind != "idefics3" or layout.rows == 0 else layout.rows * layout.cols + 1
    return tiles * layout.tokens_per_tile


def build_prompt(
    kind: str,
    tokenizer: Tokenizer,
    question: str,
    image_layout: ImageLayout | None = None,
    system: str | None = None,
) -> list[int]:
    """Token ids of the prompt, special tokens (BOS) added as the tokenizer's post-processor says."""
    text = prompt_text(kind, question, image_layout, system)
    ids = tokenizer.encode(text, add_special_tokens=True).ids
    expected = _expected_image_tokens(kind, image_layout)
    if kind in IMAGE_TOKENS:  # also without an image: a question holding the image token would take features
        image_token = IMAGE_TOKENS[kind]
        image_id = tokenizer.token_to_id(image_token)
        found = 0 if image_id is None else ids.count(image_id)
        if found and not expected:
            raise InputError(f"the question contains {image_token}, the model's image token, which only an image "
                             f"may fill: leave it out")
        if found != expected:
            # The question itself may contain the image token, or the tokenizer lacks it as a special token.
            raise InputError(
                f"prompt has {found} {image_token} tokens, expected {expected}: the tokenizer must have "
                f"{image_token} as a special token and the question must not contain it"
            )
    return ids


def image_token_positions(ids: list[int], image_token_id: int) -> list[int]:
    """Positions of the image tokens in `ids`, in order (where the image features are scattered)."""
    return [i for i, token in enumerate(ids) if token == image_token_id]
