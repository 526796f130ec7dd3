"""From a model directory and a question (and an image) to token ids and back to text.

`Pipeline.load(dir)` reads the config, weights and tokenizer, and picks the
image processor and prompt layout of the model type; `request()` turns a
question and an image file into a `Request` for `minilazy.generate`, and
`ask()` answers one question, with a lazy plan and FastV when given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from minilazy.kernels.backend import DTYPES, resolve_backend
from minilazy.config import QWEN2_VL_TYPES, ModelConfig, read_json_object
from minilazy.errors import InputError
from minilazy.fastv import FastV
from minilazy.generate import GenerationStats, Request, generate
from minilazy.image_processing import read_preprocessor_config
from minilazy.images import load_image
from minilazy.lazy.plan import LayerPlan
from minilazy.lazy.runtime import LazyRuntime
from minilazy.model import Model
from minilazy.prompts import ImageLayout, Turn, build_prompt
from minilazy.sampler import SamplingParams

PROMPT_KINDS = {"llava": "llava", "idefics3": "idefics3", "qwen2_vl": "qwen2_vl", "qwen2_5_vl": "qwen2_vl",
                "llama": "chat"}
STOP_TOKENS = ("</s>", "<|im_end|>", "<end_of_utterance>", "<|endoftext|>")


def load_tokenizer(model_dir: str | Path) -> Tokenizer:
    """`model_dir/tokenizer.json`, with a clear error when it is missing or malformed."""
    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        raise InputError(f"{model_dir}: no tokenizer.json")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as err:  # tokenizers raises a bare Exception on malformed files
        raise InputError(f"{path}: cannot read the tokenizer ({str(err).splitlines()[0]})") from None


def eos_ids(model_dir: Path, tokenizer: Tokenizer) -> set[int]:
    """End-of-sequence ids from generation_config.json, config.json and the usual stop tokens."""
    ids = {tokenizer.token_to_id(t) for t in STOP_TOKENS} - {None}
    for name in ("generation_config.json", "config.json"):
        path = model_dir / name
        if path.is_file():
            data = read_json_object(path)
            for section in (data, data.get("text_config") or {}):
                eos = section.get("eos_token_id")
                ids |= set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    return ids


def image_processor(model_dir: Path, config: ModelConfig):
    """The model type's image processor, set up from preprocessor_config.json when there is one."""
    from minilazy.image_processing.clip import ClipImageProcessor
    from minilazy.image_processing.idefics3 import Idefics3ImageProcessor
    from minilazy.image_processing.qwen2_vl import Qwen2VLImageProcessor

    try:
        settings = read_preprocessor_config(model_dir)
        if config.model_type in QWEN2_VL_TYPES:
            return Qwen2VLImageProcessor.from_config(settings)
        processor_class = ClipImageProcessor if config.model_type == "llava" else Idefics3ImageProcessor
        return processor_class.from_config(settings, config.vision.image_size)
    except InputError:
        raise
    except (ValueError, TypeError) as err:  # an entry the processor cannot use
        raise InputError(f"{model_dir / 'preprocessor_config.json'}: {err}") from None


@dataclass
class Answer:
    text: str
    tokens: list[int]
    stats: GenerationStats  # timings and KV-cache bytes (`stats.kv_saved`: the share lazy layers and FastV saved)


class Pipeline:
    def __init__(self, model_dir: Path, model: Model, tokenizer: Tokenizer):
        self.model_dir, self.model, self.tokenizer = model_dir, model, tokenizer
        self.config = model.config
        self.kind = PROMPT_KINDS[self.config.model_type]
        self.stop_ids = eos_ids(model_dir, tokenizer)
        self.processor = None
        if self.config.vision is not None:
            self.processor = image_processor(model_dir, self.config)

    @classmethod
    def load(cls, model_dir: str | Path, dtype: str = "fp32", backend: str = "auto") -> Pipeline:
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise InputError(f"{model_dir}: no such model directory")
        if dtype not in DTYPES:
            raise InputError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
        try:
            backend = resolve_backend(backend)
        except (ValueError, RuntimeError) as err:
            raise InputError(str(err)) from None
        tokenizer = load_tokenizer(model_dir)
        return cls(model_dir, Model.from_pretrained(model_dir, DTYPES[dtype], backend), tokenizer)

    def request(self, prompt: str, image=None, system: str | None = None, history: tuple[Turn, ...] = (),
                text_first: bool = False) -> Request:
        """A request for `prompt` about `image` (a path or a PIL image; None for text only), with the system
        message `system` where the prompt layout has one (ChatML: SmolLM2, Qwen2-VL), after the earlier turns
        of a conversation `history` (the image goes with the user turn marked for it, else with `prompt`, after
        its text when `text_first`)."""
        if not prompt or not prompt.strip():
            raise InputError("the prompt is empty: give a question or instruction")
        if image is None:
            return Request(self.check_vocabulary(build_prompt(self.kind, self.tokenizer, prompt, system=system,
                                                              history=history)))
        if self.processor is None:
            raise InputError(f"this {self.config.model_type} model is text-only: it cannot take an image")
        picture, grid = load_image(image), None
        if self.config.model_type in QWEN2_VL_TYPES:
            patches = self.processor([picture])
            pixels, grid, layout = patches.pixel_values, patches.grid_thw, ImageLayout(patches.tokens_per_image[0])
        elif self.config.model_type == "llava":
            pixels, layout = self.processor([picture]), ImageLayout(self.config.image_tokens_per_image)
        else:
            tiles = self.processor([picture])
            layout = ImageLayout(self.config.image_tokens_per_image, tiles.rows[0], tiles.cols[0])
            pixels = tiles.pixel_values
        ids = self.check_vocabulary(build_prompt(self.kind, self.tokenizer, prompt, layout, system, history,
                                                 text_first))
        return Request(ids, pixels.to(self.model.dtype), grid)

    def ask(self, prompt: str, image=None, *, history: tuple[Turn, ...] = (), plan: LayerPlan | None = None,
            fastv: FastV | None = None, exact_image_rows: bool = True, max_new_tokens: int = 64,
            temperature: float = 0.0, top_p: float = 1.0, seed: int = 0) -> Answer:
        """Answer `prompt` about `image` (a path, a PIL image or None) after the conversation's earlier turns
        `history`, with the lazy layers of `plan` (and its mass offsets, if it has them; `exact_image_rows`:
        see docs/lazy_attention.md) and FastV's or VTW's pruning when given; greedy unless `temperature` > 0."""
        runtime = None if plan is None and fastv is None else LazyRuntime(plan, fastv=fastv,
                                                                          exact_image_rows=exact_image_rows)
        if plan is not None:
            plan.check_layers(self.config.text.num_hidden_layers)
        params = SamplingParams(max_new_tokens, temperature, top_p=top_p, seed=seed)
        out = generate(self.model, [self.request(prompt, image, history=history)], params, stop_ids=self.stop_ids,
                       decoder_setup=runtime)
        return Answer(self.decode(out.tokens[0]), out.tokens[0], out.stats)

    def check_vocabulary(self, ids: list[int]) -> list[int]:
        """Refuse token ids the model has no embedding for (a tokenizer from another model)."""
        vocab = self.config.text.vocab_size
        if ids and max(ids) >= vocab:
            raise InputError(f"{self.model_dir}: the tokenizer gives token id {max(ids)} but the model's vocabulary "
                             f"has {vocab} entries: tokenizer.json does not belong to this model")
        return ids

    def decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)
