"""Idefics3 / SmolVLM image preprocessing: longest edge, square tiles plus a global image.

Reproduces transformers' `Idefics3ImageProcessorPil` (the PIL backend), step by step on uint8:
1. resize so the longest edge is `longest_edge` (small images are upscaled; the other edge is
   `int(longest / aspect)`, bumped to even), capped at 4096;
2. with splitting: resize again so both edges are multiples of `tile_size` (note transformers
   derives the short edge from the *rounded* long edge), cut row-major `tile_size` tiles, and append
   the global image (that picture resized to tile_size x tile_size); without splitting, or when the
   picture is a single tile, just one tile_size x tile_size image;
3. rescale by 1/255 and normalise with mean = std = 0.5. Every resize is LANCZOS.
Every output image is a full tile, so pixel_attention_mask is all ones here; transformers' zeros
only pad batches of prompts with different tile counts, which this runtime does not build.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from minilazy.image_processing import (
    HALF,
    as_image_list,
    edge_from_config,
    resample_from_config,
    rescale_and_normalize,
    resize,
)
from minilazy.images import DEFAULT_MAX_PIXELS

MAX_RESIZED_EDGE = 4096  # transformers' absolute cap on the resized image


@dataclass
class Idefics3Images:
    pixel_values: torch.Tensor  # [N_tiles_total, 3, S, S] float32, images in order, global image last
    pixel_attention_mask: torch.Tensor  # [N_tiles_total, S, S] bool
    rows: list[int]  # tile rows per image (0 when not split)
    cols: list[int]  # tile columns per image (0 when not split)


@dataclass(frozen=True)
class Idefics3ImageProcessor:
    longest_edge: int = 2048
    tile_size: int = 512  # max_image_size.longest_edge: the vision encoder's input size
    do_image_splitting: bool = True
    resample: int = Image.LANCZOS
    rescale_factor: float = 1 / 255
    mean: tuple = HALF
    std: tuple = HALF
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self):
        if self.longest_edge < 1 or self.tile_size < 1:
            raise ValueError(f"longest_edge and tile_size must be positive, got {self.longest_edge}, {self.tile_size}")

    @classmethod
    def from_config(cls, preprocessor_config: dict | None, image_size: int) -> "Idefics3ImageProcessor":
        """From preprocessor_config.json, else SmolVLM's defaults for a vision encoder of `image_size`."""
        if preprocessor_config is None:
            return cls(longest_edge=4 * image_size, tile_size=image_size)
        cfg = preprocessor_config
        if cfg.get("do_resize") is False:
            raise ValueError("preprocessor_config.json disables resizing, which is not supported")
        return cls(
            longest_edge=edge_from_config(cfg.get("size", 4 * image_size), "longest_edge"),
            tile_size=edge_from_config(cfg.get("max_image_size", image_size), "longest_edge"),
            do_image_splitting=bool(cfg.get("do_image_splitting", True)),
            resample=resample_from_config(cfg.get("resample", Image.LANCZOS)),
            rescale_factor=float(cfg.get("rescale_factor", 1 / 255)),
            mean=tuple(cfg.get("image_mean", HALF)),
            std=tuple(cfg.get("image_std", HALF)),
        )

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """Step 1: (height, width) with the longest edge at `longest_edge`, the other even, capped."""
        aspect = width / height
        if width >= height:
            width = self.longest_edge
            height = int(width / aspect)
            height += height % 2
        else:
            height = self.longest_edge
            width = int(height * aspect)
            width += width % 2
        height, width = max(height, 1), max(width, 1)
        aspect = width / height
        if width >= height and width > MAX_RESIZED_EDGE:
            width, height = MAX_RESIZED_EDGE, int(MAX_RESIZED_EDGE / aspect)
        elif height > width and height > MAX_RESIZED_EDGE:
            height, width = MAX_RESIZED_EDGE, int(MAX_RESIZED_EDGE * aspect)
        return max(height, 1), max(width, 1)

    def tiled_size(self, height: int, width: int) -> tuple[int, int]:
        """Step 2: (height, width) rounded up to multiples of tile_size, as transformers rounds them."""
        tile, aspect = self.tile_size, width / height
        if width >= height:
            width = math.ceil(width / tile) * tile
            height = math.ceil(int(width / aspect) / tile) * tile
        else:
            height = math.ceil(height / tile) * tile
            width = math.ceil(int(height * aspect) / tile) * tile
        return height, width

    def split_one(self, image: Image.Image) -> tuple[list[Image.Image], int, int]:
        """One RGB image -> its uint8 tiles (row-major, global image last), rows, cols."""
        image = resize(image, *self.resized_size(image.height, image.width), self.resample)
        if not self.do_image_splitting:
            return [resize(image, self.tile_size, self.tile_size, self.resample)], 0, 0
        image = resize(image, *self.tiled_size(image.height, image.width), self.resample)
        if image.height <= self.tile_size and image.width <= self.tile_size:
            return [image], 0, 0
        tile = self.tile_size
        rows, cols = image.height // tile, image.width // tile
        boxes = [(c * tile, r * tile, (c + 1) * tile, (r + 1) * tile) for r in range(rows) for c in range(cols)]
        tiles = [image.crop(box) for box in boxes]  # row-major
        tiles.append(resize(image, tile, tile, self.resample))
        return tiles, rows, cols

    def __call__(self, images) -> Idefics3Images:
        """Paths or PIL images (one or a list) -> all their tiles, in order, with rows/cols per image."""
        arrays, rows, cols = [], [], []
        for image in as_image_list(images, self.max_pixels):
            tiles, n_rows, n_cols = self.split_one(image)
            arrays += [rescale_and_normalize(t, self.rescale_factor, self.mean, self.std) for t in tiles]
            rows.append(n_rows)
            cols.append(n_cols)
        pixel_values = torch.from_numpy(np.stack(arrays))  # [N_tiles_total, 3, S, S]
        mask = torch.ones(pixel_values.shape[0], self.tile_size, self.tile_size, dtype=torch.bool)
        return Idefics3Images(pixel_values, mask, rows, cols)
