"""Opening and validating image files: the first step of every multimodal request.

`load_image` turns a path (or an already-open PIL image) into a fully decoded RGB `PIL.Image`, or
raises `InputError` with one line naming the file and the problem. The pixel count is checked from
the header before any pixel is decoded, so a small file claiming a huge size cannot exhaust memory.

`to_rgb` is the RGB conversion transformers' image processors apply (transparency composited onto
white); the image processors use it too, so loading first and processing later gives the same pixels.
"""

import os
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from minilazy.errors import InputError

DEFAULT_MAX_PIXELS = 50_000_000

# What PIL raises while decoding a corrupt or cut-off file (SyntaxError is its historical
# "broken file" error; zlib and struct failures surface as OSError or ValueError).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert to RGB, compositing any transparency onto white (as transformers' `convert_to_rgb`)."""
    has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
    if not has_alpha:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _check_pixels(image: Image.Image, name: str, max_pixels: int) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise InputError(f"{name}: image has an empty size {width}x{height}")
    if width * height > max_pixels:
        raise InputError(
            f"{name}: image is {width}x{height} = {width * height:,} pixels, above the limit of "
            f"{max_pixels:,} (pass a larger max_pixels to allow it)"
        )


def _decode(image: Image.Image, name: str) -> Image.Image:
    """Force a full decode (PIL is lazy) so truncated files fail here, then convert to RGB."""
    try:
        image.load()
        return to_rgb(image)
    except _DECODE_ERRORS as exc:
        raise InputError(f"{name}: cannot decode the image, it is truncated or corrupt ({_one_line(exc)})") from None


def load_image(source, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open `source` (a path or a PIL image), check its size, decode it fully and return it as RGB."""
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive pixel count, got {max_pixels}")
    if isinstance(source, Image.Image):
        _check_pixels(source, "image", max_pixels)
        return _decode(source, "image")
    if not isinstance(source, (str, os.PathLike)):
        raise InputError(f"expected an image path or a PIL image, got {type(source).__name__}")

    path = Path(source)
    name = str(path)
    if not path.exists():
        raise InputError(f"{name}: image file not found")
    if not path.is_file():
        raise InputError(f"{name}: not a regular file, cannot read it as an image")
    try:
        # PIL warns (and raises past twice its limit) about huge images while reading the header;
        # our own limit below is the one that decides, so the warning is noise.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise InputError(f"{name}: image is too large to open safely ({_one_line(exc)})") from None
    except UnidentifiedImageError:
        raise InputError(f"{name}: not an image (or an image format PIL cannot read)") from None
    except OSError as exc:
        raise InputError(f"{name}: cannot read the file ({exc.strerror or _one_line(exc)})") from None
    with image:
        _check_pixels(image, name, max_pixels)
        return _decode(image, name)
