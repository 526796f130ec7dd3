"""Image preprocessing: pictures in, normalised pixel tensors for a vision encoder out.

One processor per vision-encoder family, each reproducing transformers' PIL backend:
`clip.ClipImageProcessor` (LLaVA-1.5: shortest edge, centre crop) and
`idefics3.Idefics3ImageProcessor` (SmolVLM: longest edge, 512-pixel tiles plus a global image).
This module holds the steps they share. Resizing works on uint8 PIL images (as transformers does:
its numpy arrays go through PIL and back losslessly), and rescaling and normalising follow
transformers' arithmetic exactly (rescale in float64, cast to float32, normalise in float32).
"""

from pathlib import Path

import numpy as np
from PIL import Image

from minilazy.config import read_json_object
from minilazy.errors import InputError
from minilazy.images import DEFAULT_MAX_PIXELS, load_image

# transformers' OPENAI_CLIP_MEAN/STD and IMAGENET_STANDARD_MEAN/STD.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)


def read_preprocessor_config(model_dir) -> dict | None:
    """The checkpoint's preprocessor_config.json as a dict, or None when it has none."""
    path = Path(model_dir) / "preprocessor_config.json"
    return read_json_object(path) if path.is_file() else None


def resample_from_config(value) -> int:
    """A `resample` entry: one of PIL's resampling filters, by number."""
    if isinstance(value, bool) or value not in {int(f) for f in Image.Resampling}:
        raise ValueError(f"resample {value!r} is not a PIL resampling filter "
                         f"({', '.join(f'{int(f)} {f.name.lower()}' for f in Image.Resampling)})")
    return int(value)


def edge_from_config(value, key: str) -> int:
    """Read a size entry that is either an int (old configs) or a dict like {"shortest_edge": 336}."""
    if isinstance(value, dict):
        if key in value:
            return int(value[key])
        if "height" in value and "width" in value and value["height"] == value["width"]:
            return int(value["height"])
        raise ValueError(f"size entry {value} has no {key!r} (or equal 'height' and 'width')")
    return int(value)


def as_image_list(images, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[Image.Image]:
    """Accept one image or a list of paths / PIL images; return decoded RGB images."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise InputError("no images given")
        return [load_image(image, max_pixels) for image in images]
    return [load_image(images, max_pixels)]


def resize(image: Image.Image, height: int, width: int, resample: int) -> Image.Image:
    """PIL resize taking (height, width), the order every size in this package uses."""
    if height < 1 or width < 1:
        raise ValueError(f"cannot resize to {height}x{width}: both sides must be at least 1 pixel")
    return image.resize((width, height), resample=resample)


def rescale_and_normalize(image: Image.Image, rescale_factor: float, mean, std) -> np.ndarray:
    """uint8 RGB image -> float32 [3, H, W] array, `(x * rescale_factor - mean) / std` per channel."""
    pixels = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)  # [3, H, W]
    # float64 then float32, as transformers' rescale does, so results agree to the last bit.
    scaled = (pixels.astype(np.float64) * rescale_factor).astype(np.float32)
    mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)  # [3, 1, 1]
    std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)  # [3, 1, 1]
    return (scaled - mean) / std
