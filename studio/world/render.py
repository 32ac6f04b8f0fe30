"""Draw a scene as an RGB image, and give each object's pixel box (for grounding checks)."""
from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from studio.world.scenes import GRID, Scene, SceneObject

IMAGE_SIZE = 64
CELL = IMAGE_SIZE // GRID
OBJECT_PIXELS = {"small": 9, "large": 15}
RGB = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 90, 230),
    "yellow": (230, 210, 40), "purple": (150, 60, 200), "orange": (240, 140, 30),
}
BACKGROUND = (28, 28, 32)
BACKGROUND_NOISE = 8


def is_world_render(image: Image.Image) -> bool:
    """Whether ``image`` looks like a world scene: 64x64 with most pixels within the render's
    noise of the world's background (a cheap check that tells the world's renders from photos)."""
    if image.size != (IMAGE_SIZE, IMAGE_SIZE):
        return False
    pixels = np.asarray(image.convert("RGB"), dtype=np.int16).reshape(-1, 3)
    near = int((np.abs(pixels - np.array(BACKGROUND)) <= BACKGROUND_NOISE).all(axis=1).sum())
    return near >= 0.4 * IMAGE_SIZE * IMAGE_SIZE


def object_box(obj: SceneObject) -> tuple[int, int, int, int]:
    """The object's (left, top, right, bottom) pixel box, right/bottom exclusive."""
    half = OBJECT_PIXELS[obj.size] / 2
    cx, cy = obj.col * CELL + CELL / 2, obj.row * CELL + CELL / 2
    return (math.floor(cx - half), math.floor(cy - half), math.ceil(cx + half), math.ceil(cy + half))


def _star(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    points = []
    for i in range(10):
        radius = r if i % 2 == 0 else r * 0.45
        angle = -math.pi / 2 + i * math.pi / 5
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return points


def _draw(draw: ImageDraw.ImageDraw, obj: SceneObject) -> None:
    x0, y0, x1, y1 = object_box(obj)
    x1, y1 = x1 - 1, y1 - 1
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    fill = RGB[obj.colour]
    if obj.kind == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif obj.kind == "square":
        draw.rectangle((x0 + 1, y0 + 1, x1 - 1, y1 - 1), fill=fill)
    elif obj.kind == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    elif obj.kind == "cross":
        w = max(1, round(r * 0.35))
        draw.rectangle((cx - w, y0, cx + w, y1), fill=fill)
        draw.rectangle((x0, cy - w, x1, cy + w), fill=fill)
    elif obj.kind == "ring":
        draw.ellipse((x0, y0, x1, y1), outline=fill, width=max(2, round(r * 0.35)))
    elif obj.kind == "star":
        draw.polygon(_star(cx, cy, r), fill=fill)
    elif obj.kind == "heart":
        draw.ellipse((x0, y0, cx + 0.5, cy + 0.5), fill=fill)
        draw.ellipse((cx - 0.5, y0, x1, cy + 0.5), fill=fill)
        draw.polygon([(x0, cy - r * 0.2), (x1, cy - r * 0.2), (cx, y1)], fill=fill)
    elif obj.kind == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)
    else:
        raise ValueError(f"no drawing for object kind {obj.kind!r}")


def render(scene: Scene, noise: int = 6) -> Image.Image:
    """The scene as a 64 x 64 RGB image; background grain is seeded by the scene's seed."""
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        _draw(draw, obj)
    if noise:
        rng = random.Random(scene.seed * 7919 + 13)
        grain = Image.frombytes("L", image.size, bytes(rng.randrange(noise) for _ in range(IMAGE_SIZE ** 2)))
        image = ImageChops.add(image, Image.merge("RGB", [grain] * 3))
    return image
