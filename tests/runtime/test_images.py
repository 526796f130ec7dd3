"""Opening images: good files decode to RGB; every kind of bad file is one clear InputError."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from minilazy.errors import InputError
from minilazy.images import load_image


def _noise(width, height, mode="RGB"):
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode=mode)


def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header_only(width, height):
    """A valid PNG claiming width x height whose pixel data is one compressed row of zeros."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    idat = zlib.compress(bytes(16))
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _assert_one_line(exc_info, *words):
    message = str(exc_info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
def test_loads_png_as_rgb(tmp_path, mode):
    path = tmp_path / "ok.png"
    _noise(9, 7, mode).save(path)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (9, 7)
    if mode == "RGB":
        assert np.array_equal(np.asarray(image), np.asarray(_noise(9, 7)))


def test_transparency_composited_on_white(tmp_path):
    path = tmp_path / "clear.png"
    Image.new("RGBA", (4, 3), (10, 20, 30, 0)).save(path)
    assert np.asarray(load_image(path)).min() == 255


def test_accepts_open_pil_image():
    image = load_image(_noise(5, 6, "RGBA"))
    assert image.mode == "RGB" and image.size == (5, 6)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.png"
    with pytest.raises(InputError) as exc_info:
        load_image(path)
    _assert_one_line(exc_info, str(path), "not found")


def test_directory_is_unreadable(tmp_path):
    with pytest.raises(InputError) as exc_info:
        load_image(tmp_path)
    _assert_one_line(exc_info, str(tmp_path), "not a regular file")


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("these are not pixels\n")
    with pytest.raises(InputError) as exc_info:
        load_image(path)
    _assert_one_line(exc_info, str(path), "not an image")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(tmp_path, fmt):
    path = tmp_path / f"cut.{fmt.lower()}"
    _noise(64, 48).save(path, format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as exc_info:
        load_image(path)
    _assert_one_line(exc_info, str(path), "truncated")


def test_huge_header_refused_by_pil_limit(tmp_path):
    # 10^10 pixels: past PIL's own bomb limit, which must also surface as InputError.
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(100_000, 100_000))
    with pytest.raises(InputError) as exc_info:
        load_image(path)
    _assert_one_line(exc_info, str(path), "too large")


def test_huge_header_refused_before_decoding(tmp_path):
    # 10^8 pixels: under PIL's hard limit, above ours. The file holds one row of pixels, so a
    # decode attempt fails as "truncated" (shown on a small one); the big one must fail on its size.
    small = tmp_path / "small.png"
    small.write_bytes(_png_header_only(300, 200))
    with pytest.raises(InputError, match="truncated"):
        load_image(small)
    path = tmp_path / "big.png"
    path.write_bytes(_png_header_only(10_000, 10_000))
    with pytest.raises(InputError) as exc_info:
        load_image(path)
    _assert_one_line(exc_info, str(path), "10000x10000", "limit")


def test_custom_pixel_limit(tmp_path):
    path = tmp_path / "small.png"
    _noise(40, 30).save(path)
    assert load_image(path, max_pixels=1200).size == (40, 30)
    with pytest.raises(InputError, match="above the limit"):
        load_image(path, max_pixels=1199)
    with pytest.raises(InputError, match="above the limit"):
        load_image(_noise(40, 30), max_pixels=1199)
