import io

import numpy as np
import pytest
from PIL import Image

from studio.engine.errors import InputError
from studio.engine.images import load_image


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_non_image_and_missing_and_truncated_files_are_refused(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image at all")
    with pytest.raises(InputError, match="not an image"):
        load_image(text)
    with pytest.raises(InputError, match="no image file"):
        load_image(tmp_path / "missing.png")
    data = png_bytes(Image.new("RGB", (64, 64), (10, 200, 30)))
    with pytest.raises(InputError, match="truncated|could not"):
        load_image(data[: len(data) // 2])


def test_tiny_and_huge_images_are_refused_before_decoding(tmp_path):
    with pytest.raises(InputError, match="at least"):
        load_image(png_bytes(Image.new("RGB", (1, 1))))
    huge = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(huge)
    with pytest.raises(InputError, match="megapixels"):
        load_image(huge)


def test_modes_become_rgb_without_clipping():
    rgba = Image.new("RGBA", (16, 16), (255, 0, 0, 0))
    assert load_image(rgba).getpixel((0, 0)) == (255, 255, 255), "transparent composites on white"
    grey = Image.new("L", (16, 16), 77)
    assert load_image(grey).getpixel((3, 3)) == (77, 77, 77)
    ramp = np.tile(np.arange(16, dtype=np.uint16) * 4000, (16, 1))
    img16 = Image.fromarray(ramp)
    assert img16.mode == "I;16"
    out = np.asarray(load_image(img16))
    assert out[0, 0, 0] == 0 and out[0, -1, 0] == 255 and len(np.unique(out[..., 0])) == 16
    assert load_image(np.zeros((10, 12, 3), dtype=np.uint8)).size == (12, 10)
