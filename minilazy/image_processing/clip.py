"""CLIP / LLaVA-1.5 image preprocessing: shortest edge -> size, centre crop, CLIP normalisation.

Reproduces transformers' `CLIPImageProcessorPil` / `LlavaImageProcessorPil` (the PIL backend):
resize so the shortest edge is `size` (the long edge becomes `int(size * long / short)`, bicubic),
crop the centre `crop_size` square (top = (h - crop) // 2), rescale by 1/255 and normalise with
the CLIP mean and std. Output: pixel_values [N, 3, crop_size, crop_size] float32.
"""

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from minilazy.errors import InputError
from minilazy.image_processing import (
    CLIP_MEAN,
    CLIP_STD,
    as_image_list,
    edge_from_config,
    resample_from_config,
    rescale_and_normalize,
    resize,
)
from minilazy.images import DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class ClipImageProcessor:
    size: int = 336  # target shortest edge
    crop_size: int = 336
    resample: int = Image.BICUBIC
    rescale_factor: float = 1 / 255
    mean: tuple = CLIP_MEAN
    std: tuple = CLIP_STD
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self):
        if self.size < 1 or self.crop_size < 1:
            raise ValueError(f"size and crop_size must be positive, got {self.size} and {self.crop_size}")
        if self.crop_size > self.size:
            # transformers would zero-pad the crop; no released checkpoint does that.
            raise ValueError(f"crop_size {self.crop_size} must not exceed the resized shortest edge {self.size}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 channel values, got {self.mean} and {self.std}")

    @classmethod
    def from_config(cls, preprocessor_config: dict | None, image_size: int) -> "ClipImageProcessor":
        """From preprocessor_config.json when there is one, else from the vision config's image_size."""
        if preprocessor_config is None:
            return cls(size=image_size, crop_size=image_size)
        cfg = preprocessor_config
        if cfg.get("do_pad"):
            raise ValueError("preprocessor_config.json asks for do_pad (pad to square), which is not supported")
        if cfg.get("do_resize") is False or cfg.get("do_center_crop") is False:
            raise ValueError("preprocessor_config.json disables resizing or centre cropping, which is not supported")
        return cls(
            size=edge_from_config(cfg.get("size", image_size), "shortest_edge"),
            crop_size=edge_from_config(cfg.get("crop_size", image_size), "height"),
            resample=resample_from_config(cfg.get("resample", Image.BICUBIC)),
            rescale_factor=float(cfg.get("rescale_factor", 1 / 255)),
            mean=tuple(cfg.get("image_mean", CLIP_MEAN)),
            std=tuple(cfg.get("image_std", CLIP_STD)),
        )

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) after scaling the shortest edge to `size` (transformers' integer rounding)."""
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(self.size * long / short)
        return (new_long, self.size) if width <= height else (self.size, new_long)

    def preprocess_one(self, image: Image.Image) -> np.ndarray:
        """One RGB image -> float32 [3, crop_size, crop_size]."""
        height, width = self.resized_size(image.height, image.width)
        if height * width > self.max_pixels:  # a very thin strip: its shortest edge scales up the long one
            raise InputError(f"a {image.width}x{image.height} image would be resized to {width}x{height}, over "
                             f"{self.max_pixels:,} pixels: its sides are too unequal (crop it first)")
        image = resize(image, height, width, self.resample)
        top = (height - self.crop_size) // 2
        left = (width - self.crop_size) // 2
        image = image.crop((left, top, left + self.crop_size, top + self.crop_size))
        return rescale_and_normalize(image, self.rescale_factor, self.mean, self.std)

    def __call__(self, images) -> torch.Tensor:
        """Paths or PIL images (one or a list) -> pixel_values [N, 3, crop_size, crop_size] float32."""
        arrays = [self.preprocess_one(image) for image in as_image_list(images, self.max_pixels)]
        return torch.from_numpy(np.stack(arrays))
