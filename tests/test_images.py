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


def test_palette_exif_and_float_images_become_the_right_rgb(tmp_path):
    palette = Image.new("P", (16, 16), 0)
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putpixel((3, 3), 1)
    palette.info["transparency"] = 0
    out = load_image(palette)
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 255, 255), "transparent index on white"
    assert out.getpixel((3, 3)) == (0, 0, 255)
    tall = Image.new("RGB", (20, 40), (0, 255, 0))
    tall.paste((255, 0, 0), (0, 0, 8, 8))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    tall.save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    shown = load_image(tmp_path / "rotated.jpg")
    assert shown.size == (40, 20), "EXIF orientation applied"
    assert shown.getpixel((36, 3))[0] > 200 and shown.getpixel((3, 3))[0] < 60, "top-left moved to top-right"
    ramp = np.linspace(-1.5, 2.5, 16 * 16, dtype=np.float32).reshape(16, 16)
    as_float = load_image(Image.fromarray(ramp, mode="F"))
    values = np.asarray(as_float)[..., 0]
    assert values.min() == 0 and values.max() == 255 and len(np.unique(values)) > 200, "rescaled, not clipped"
    assert np.asarray(load_image(ramp[..., None]))[..., 0].tolist() == values.tolist(), "arrays rescale the same way"
