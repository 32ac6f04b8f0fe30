"""The sample scenes shown in the studio's gallery: rendered images with ground truth."""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from studio.engine.assets import asset
from studio.engine.images import ImageLike, load_image, pixel_digest
from studio.world.language import caption
from studio.world.render import render
from studio.world.scenes import Scene, sample_split

SAMPLE_DIR = asset("samples")
SAMPLE_PLAN = (("neutral", 6), ("cooccur", 4), ("colour_prior", 2))


@dataclass
class Sample:
    path: Path
    scene: Scene
    caption: str


def write_samples(out: Path = SAMPLE_DIR) -> list[Sample]:
    """Render the gallery's scenes (seeds 0.. of each split) with their ground truth."""
    out.mkdir(parents=True, exist_ok=True)
    samples, records = [], []
    for split, n in SAMPLE_PLAN:
        for scene in sample_split(split, n, start=900):
            name = f"{split}-{scene.seed}.png"
            render(scene).save(out / name)
            samples.append(Sample(out / name, scene, caption(scene)))
            records.append({"image": name, "caption": caption(scene), **scene.to_dict()})
    (out / "ground_truth.json").write_text(json.dumps(records, indent=1))
    return samples


@functools.lru_cache(maxsize=4)
def _digests(folder: Path) -> dict[str, Scene]:
    return {pixel_digest(load_image(s.path)): s.scene for s in load_samples(folder)}


def scene_of(image: ImageLike, folder: Path = SAMPLE_DIR) -> Scene | None:
    """The ground truth of an image that is pixel-identical to a sample scene, else None.

    This is how ground truth follows a sample through uploads and API calls, which carry
    the picture but not the app's selection state.
    """
    return _digests(folder).get(pixel_digest(load_image(image)))


def load_samples(folder: Path = SAMPLE_DIR) -> list[Sample]:
    """The shipped samples; an empty list if the folder has none."""
    index = folder / "ground_truth.json"
    if not index.is_file():
        return []
    return [Sample(folder / r["image"], Scene.from_dict(r), r["caption"]) for r in json.loads(index.read_text())]
