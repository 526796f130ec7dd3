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
Earlier turns of a conversation (`Turn`s) come first, rendered as the same chat templates render
them; the image may sit in any one user turn.
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


@dataclass(frozen=True)
class Turn:
    """An earlier turn of a conversation: `role` "user" or "assistant", its text, and, for a user turn,
    whether the image is in it (else it goes with the question) and whether it follows the text (a chat
    message whose text part comes first; LLaVA's template writes images first whatever the order)."""

    role: str
    text: str
    image: bool = False
    text_first: bool = False


def prompt_text(kind: str, question: str, image_layout: ImageLayout | None = None, system: str | None = None,
                history: tuple[Turn, ...] = (), text_first: bool = False) -> str:
    """The full prompt as text, image tokens already expanded: the turns of `history` (user and assistant
    by turns, from a user turn), then `question` as the last user turn (its image after its text when
    `text_first`) and the assistant's turn opened."""
    if kind not in KINDS:
        raise ValueError(f"unknown prompt kind {kind!r}; expected one of {', '.join(KINDS)}")
    if not question.strip():
        raise InputError("the prompt is empty: give a question or instruction")
    check_history(history, image_layout)
    if system is not None and kind not in SYSTEM_KINDS:
        raise InputError(f"the {kind} prompt has no system message")
    image = "" if image_layout is None else image_text(kind, image_layout)
    turns = (*history, Turn("user", question, bool(image) and not any(t.image for t in history), text_first))

    def content(t: Turn) -> str:  # the turn's text and image in its message's order
        return (t.text + image if t.text_first else image + t.text) if t.image else t.text

    if kind in SYSTEM_KINDS:  # ChatML, with the model's default system message
        system = (SMOLLM2_SYSTEM if kind == "chat" else QWEN_SYSTEM) if system is None else system
        body = "".join(f"<|im_start|>{t.role}\n{content(t)}<|im_end|>\n" for t in turns)
        return f"<|im_start|>system\n{system}<|im_end|>\n{body}<|im_start|>assistant\n"
    if kind == "llava":  # LLaVA-1.5's chat template: "USER: " or "ASSISTANT: ", the image, the text and a space
        return "".join(f"{t.role.upper()}: {image if t.image else ''}{t.text + ' ' if t.text else ''}"
                       for t in turns) + "ASSISTANT:"
    # SmolVLM's chat template: "User:" directly before an image first in the message, "User: " before text.
    body = "".join(f"{t.role.capitalize()}:{'' if t.image and not t.text_first else ' '}{content(t)}"
                   f"<end_of_utterance>\n" for t in turns)
    return f"<|im_start|>{body}Assistant:"


def image_text(kind: str, layout: ImageLayout) -> str:
    """The text that stands for one image in a `kind` prompt."""
    if kind == "chat":
        raise ValueError("the text-only chat prompt cannot hold an image")
    if kind == "qwen2_vl":
        if layout.rows:
            raise ValueError("a Qwen2-VL image is one tile: its layout has no rows and columns")
        return f"<|vision_start|>{QWEN_IMAGE_TOKEN * layout.tokens_per_tile}<|vision_end|>"
    if kind == "llava":
        return IMAGE_TOKEN * layout.tokens_per_tile + "\n"
    return idefics3_image_text(layout)


def check_history(history: tuple[Turn, ...], image_layout: ImageLayout | None) -> None:
    """Refuse turns out of order, and an image in an assistant turn, in a request without one, or twice."""
    for i, turn in enumerate(history):
        role = ("user", "assistant")[i % 2]
        if turn.role != role:
            raise InputError(f"turn {i} of the conversation is {turn.role!r}, expected {role!r}: user and assistant "
                             "turns alternate, from a user turn, and the question is the last user turn")
        if turn.image and (role != "user" or image_layout is None):
            raise InputError(f"turn {i} carries an image, but only a user turn of a request with an image may")
    if len(history) % 2:
        raise InputError("the conversation before the question must end with an assistant turn")
    if sum(turn.image for turn in history) > 1:
        raise InputError("a conversation holds at most one image")


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
    history: tuple[Turn, ...] = (),
    text_first: bool = False,
) -> list[int]:
    """Token ids of the prompt, special tokens (BOS) added as the tokenizer's post-processor says."""
    text = prompt_text(kind, question, image_layout, system, history, text_first)
    ids = tokenizer.encode(text, add_special_tokens=True).ids
    expected = _expected_image_tokens(kind, image_layout)
    if kind in IMAGE_TOKENS:  # also without an image: text holding the image token would take features
        image_token = IMAGE_TOKENS[kind]
        image_id = tokenizer.token_to_id(image_token)
        found = 0 if image_id is None else ids.count(image_id)
        if found and not expected:
            raise InputError(f"the question or an earlier turn contains {image_token}, the model's image token, "
                             f"which only an image may fill: leave it out")
        if found != expected:
            # The text may contain the image token, or the tokenizer lacks it as a special token.
            raise InputError(
                f"prompt has {found} {image_token} tokens, expected {expected}: the tokenizer must have "
                f"{image_token} as a special token and the question and earlier turns must not contain it"
            )
    return ids


def image_token_positions(ids: list[int], image_token_id: int) -> list[int]:
    """Positions of the image tokens in `ids`, in order (where the image features are scattered)."""
    return [i for i, token in enumerate(ids) if token == image_token_id]
