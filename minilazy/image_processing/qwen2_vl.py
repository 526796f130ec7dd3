"""Qwen2-VL / Qwen2.5-VL image preprocessing: any size in, flattened patches and their grid out.

Reproduces transformers' `Qwen2VLImageProcessorPil` (models/qwen2_vl/image_processing_pil_qwen2_vl.py),
which both Qwen2-VL and Qwen2.5-VL checkpoints use:
1. `smart_resize`: both sides rounded to multiples of `patch_size * merge_size`, then scaled down
   (floor) into `max_pixels` or up (ceil) to `min_pixels`, keeping the aspect ratio; bicubic on uint8;
2. rescale by 1/255 and normalise with the CLIP mean and std;
3. patchify: each `patch_size` square becomes one row, the image repeated over `temporal_patch_size`
   frames (a picture is a one-frame video), rows ordered block-major over `merge_size` x `merge_size`
   blocks so that the merger's groups of `merge_size**2` rows are consecutive.
Output: pixel_values [N_patches, C * temporal_patch_size * patch_size**2] float32 and grid_thw
[n_images, 3] = (1, height / patch_size, width / patch_size) per image.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from minilazy.errors import InputError
from minilazy.image_processing import (
    CLIP_MEAN,
    CLIP_STD,
    as_image_list,
    resample_from_config,
    rescale_and_normalize,
    resize,
)
from minilazy.images import DEFAULT_MAX_PIXELS

MAX_ASPECT_RATIO = 200  # transformers refuses images whose long side exceeds 200 times the short one
DEFAULT_SIZE = {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 1280}  # transformers' class defaults


@dataclass
class Qwen2VLImages:
    pixel_values: torch.Tensor  # [N_patches, C * temporal_patch_size * patch_size**2] float32, images in order
    grid_thw: torch.Tensor  # [n_images, 3] int64: (frames, patch rows, patch columns)
    merge_size: int

    @property
    def tokens_per_image(self) -> list[int]:
        """Decoder tokens of each image, `t * h * w // merge_size**2` (the `<|image_pad|>` count)."""
        return (self.grid_thw.prod(dim=1) // self.merge_size**2).tolist()


@dataclass(frozen=True)
class Qwen2VLImageProcessor:
    min_pixels: int = DEFAULT_SIZE["shortest_edge"]
    max_pixels: int = DEFAULT_SIZE["longest_edge"]
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    resample: int = Image.BICUBIC
    rescale_factor: float = 1 / 255
    mean: tuple = CLIP_MEAN
    std: tuple = CLIP_STD
    max_input_pixels: int = DEFAULT_MAX_PIXELS  # the largest picture accepted before resizing

    def __post_init__(self):
        for name in ("min_pixels", "max_pixels", "patch_size", "temporal_patch_size", "merge_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"Qwen2-VL image processor: {name} must be a positive integer, got {value!r}")
        if self.min_pixels > self.max_pixels:
            raise InputError(f"Qwen2-VL image processor: min_pixels {self.min_pixels} exceeds max_pixels "
                             f"{self.max_pixels}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise InputError(f"Qwen2-VL image processor: mean and std need 3 channel values, got {self.mean} "
                             f"and {self.std}")

    @classmethod
    def from_config(cls, preprocessor_config: dict | None) -> "Qwen2VLImageProcessor":
        """From preprocessor_config.json (`min_pixels`/`max_pixels`, or `size` as newer files write
        them; the top-level keys win, as in transformers), else transformers' defaults."""
        if preprocessor_config is None:
            return cls()
        cfg = preprocessor_config
        for step in ("do_resize", "do_rescale", "do_normalize", "do_convert_rgb"):
            if cfg.get(step) is False:
                raise InputError(f"preprocessor_config.json sets {step} to false, which is not supported")
        size = DEFAULT_SIZE if cfg.get("size") is None else cfg["size"]
        if not isinstance(size, dict):
            raise InputError(f"preprocessor_config.json: size must be a dict like {DEFAULT_SIZE}, got {size!r}")
        size = dict(size)
        size["shortest_edge"] = cfg.get("min_pixels", size.get("shortest_edge"))
        size["longest_edge"] = cfg.get("max_pixels", size.get("longest_edge"))
        if size["shortest_edge"] is None or size["longest_edge"] is None:
            raise InputError(f"preprocessor_config.json: size {cfg['size']} needs 'shortest_edge' and "
                             f"'longest_edge' (or give min_pixels and max_pixels)")
        try:
            resample = resample_from_config(cfg.get("resample", Image.BICUBIC))
        except ValueError as error:
            raise InputError(f"preprocessor_config.json: {error}") from None
        return cls(
            min_pixels=size["shortest_edge"],
            max_pixels=size["longest_edge"],
            patch_size=cfg.get("patch_size", 14),
            temporal_patch_size=cfg.get("temporal_patch_size", 2),
            merge_size=cfg.get("merge_size", 2),
            resample=resample,
            rescale_factor=float(cfg.get("rescale_factor", 1 / 255)),
            mean=tuple(cfg.get("image_mean", CLIP_MEAN)),
            std=tuple(cfg.get("image_std", CLIP_STD)),
        )

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """transformers' `smart_resize`: (height, width) as multiples of patch_size * merge_size whose
        product lies within [min_pixels, max_pixels] (up to that rounding)."""
        if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
            raise InputError(f"a {width}x{height} image is too thin: its sides may differ at most "
                             f"{MAX_ASPECT_RATIO} times (crop it first)")
        factor = self.patch_size * self.merge_size
        h_bar = round(height / factor) * factor
        w_bar = round(width / factor) * factor
        if h_bar * w_bar > self.max_pixels:
            beta = math.sqrt(height * width / self.max_pixels)
            h_bar = max(factor, math.floor(height / beta / factor) * factor)
            w_bar = max(factor, math.floor(width / beta / factor) * factor)
        elif h_bar * w_bar < self.min_pixels:
            beta = math.sqrt(self.min_pixels / (height * width))
            h_bar = math.ceil(height * beta / factor) * factor
            w_bar = math.ceil(width * beta / factor) * factor
        return h_bar, w_bar

    def patchify(self, pixels: np.ndarray) -> np.ndarray:
        """float32 [C, H, W] -> [H/p * W/p, C * tp * p * p] rows, block-major over merge_size squares."""
        p, m, tp = self.patch_size, self.merge_size, self.temporal_patch_size
        channels, height, width = pixels.shape
        grid_h, grid_w = height // p, width // p
        patches = pixels.reshape(channels, grid_h // m, m, p, grid_w // m, m, p)  # [C, gh/m, m, p, gw/m, m, p]
        patches = patches.transpose(1, 4, 2, 5, 0, 3, 6)  # [gh/m, gw/m, m, m, C, p, p]
        frames = (*patches.shape[:5], tp, p, p)
        patches = np.broadcast_to(patches[:, :, :, :, :, None], frames)  # [gh/m, gw/m, m, m, C, tp, p, p]
        return patches.reshape(grid_h * grid_w, channels * tp * p * p)  # [gh*gw, C*tp*p*p]

    def preprocess_one(self, image: Image.Image) -> tuple[np.ndarray, tuple[int, int, int]]:
        """One RGB image -> its patch rows and its grid (1, h, w)."""
        height, width = self.resized_size(image.height, image.width)
        image = resize(image, height, width, self.resample)
        pixels = rescale_and_normalize(image, self.rescale_factor, self.mean, self.std)  # [3, H, W]
        return self.patchify(pixels), (1, height // self.patch_size, width // self.patch_size)

    def __call__(self, images) -> Qwen2VLImages:
        """Paths or PIL images (one or a list) -> every image's patches, concatenated, and their grids."""
        rows, grids = zip(*(self.preprocess_one(image) for image in as_image_list(images, self.max_input_pixels)))
        pixel_values = torch.from_numpy(np.concatenate(rows))  # [N_patches, C*tp*p*p]
        return Qwen2VLImages(pixel_values, torch.tensor(grids, dtype=torch.int64), self.merge_size)
