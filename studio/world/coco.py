"""World scenes as a COCO-format folder, with POPE question files built the POPE way.

``vlm-studio world export DIR`` writes the scenes ``world eval`` scores, so that other tools
(COCO readers, the POPE repository's scorer, other models' harnesses) can run on them::

    DIR/images/<split>_<index>.png          the images world eval shows the model
    DIR/annotations/instances_world.json    COCO instances: one box per object, 8 shape categories
    DIR/annotations/captions_world.json     COCO captions: each scene's ground-truth caption
    DIR/pope/world_pope_<kind>.json         POPE questions, one JSON object per line
    DIR/world.json                          manifest: settings, and each image's split and scene

The POPE questions are not rebuilt here: they are read from :func:`evaluate_split` itself,
run with an answerer that only returns empty strings, so they are by construction the
questions (same scenes, rng stream, order and negatives) that ``world eval`` asks. Scoring a
model's answers to one split's lines therefore gives that split's ``world eval`` POPE numbers.
"""
from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from studio.engine.errors import InputError
from studio.engine.files import atomic_write, atomic_write_json
from studio.world.evaluate import (
    EVAL_SPLITS,
    POPE_KINDS,
    cooccurrence,
    evaluate_split,
    training_frequency,
)
from studio.world.language import CAPTION_PROMPT, caption
from studio.world.render import IMAGE_SIZE, object_box, render
from studio.world.scenes import KINDS, Scene, SceneObject

EXPORT_FORMAT = "vlm-studio world export"
MANIFEST = "world.json"
INSTANCES = "annotations/instances_world.json"
CAPTIONS = "annotations/captions_world.json"
SUPERCATEGORY = "shape"
CATEGORY_IDS = {kind: i for i, kind in enumerate(KINDS, start=1)}  # COCO category ids start at 1


def pope_file(kind: str) -> str:
    """The POPE file of a negative kind, relative to the export folder."""
    return f"pope/world_pope_{kind}.json"


@dataclass(frozen=True)
class ExportedScene:
    """One exported image: its COCO id (1-based over the whole export), split, position in the
    split as :func:`evaluate_split` numbers it, scene, and the POPE (question, truth) pairs asked."""

    image_id: int
    split: str
    index: int
    scene: Scene
    pope: dict[str, list[tuple[str, str]]]

    @property
    def file_name(self) -> str:
        return f"{self.split}_{self.index}.png"


@dataclass
class WorldExport:
    """What :func:`export_world` wrote: the folder, every path in it, and counts."""

    folder: Path
    manifest: Path
    images: list[Path]
    instances: Path
    captions: Path
    pope: dict[str, Path]
    n_objects: int
    n_questions: dict[str, int]


def _settings(splits: list[str], n_scenes: int, seed: int) -> dict:
    """The settings an export is made from (and compared on, to allow rewriting it)."""
    return {"splits": splits, "n_scenes": n_scenes, "seed": seed}


def _check_settings(splits: list[str], n_scenes: int) -> list[str]:
    """The splits without repeats; refuses splits ``world eval`` does not score and ``n_scenes < 1``."""
    unknown = [s for s in splits if s not in EVAL_SPLITS]
    if unknown or not splits:
        raise InputError(f"unknown split(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(EVAL_SPLITS)}")
    if n_scenes < 1:
        raise InputError(f"the number of scenes per split must be at least 1; got {n_scenes}")
    return list(dict.fromkeys(splits))


def _read_manifest(folder: Path) -> dict | None:
    """The folder's export manifest, or None if it has no readable one."""
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("format") == EXPORT_FORMAT else None


def _check_folder(out: Path, settings: dict) -> None:
    """Refuse to write into a non-empty ``out`` unless it is an export of the same settings."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    manifest = _read_manifest(out) if out.is_dir() else None
    if manifest is None:
        raise InputError(f"{out} exists and is not empty (nor a world export); choose an empty or new folder")
    previous = {k: manifest.get(k) for k in settings}
    if previous != settings:
        raise InputError(f"{out} holds a world export of other settings ({json.dumps(previous)}, "
                         f"not {json.dumps(settings)}); choose an empty or new folder")


def _asked(splits: list[str], n_scenes: int, seed: int, freq: Counter,
           cooc: dict[str, Counter]) -> list[ExportedScene]:
    """Every scene ``world eval`` scores, with the POPE questions it asks, in its order.

    :func:`evaluate_split` is run with an answerer that returns empty strings; its per-scene
    records hold the scene and each (question, truth) it asked.
    """
    scenes: list[ExportedScene] = []
    for split in splits:
        _, records = evaluate_split(_no_answer, split, n_scenes, seed=seed, progress=False, freq=freq, cooc=cooc)
        for index, record in enumerate(records):
            pope = {kind: [(q, t) for q, t, _ in record["pope"].get(kind, [])] for kind in POPE_KINDS}
            scenes.append(ExportedScene(len(scenes) + 1, split, index, Scene.from_dict(record["scene"]), pope))
    return scenes


def _no_answer(images: list, prompts: list[str], max_new_tokens: int) -> list[str]:
    """An answerer that says nothing: used only to collect the questions being asked."""
    return [""] * len(prompts)


def png_bytes(scene: Scene) -> bytes:
    """``render(scene)`` as PNG bytes: the same defaults (noise) as :func:`evaluate_split` uses."""
    buffer = io.BytesIO()
    render(scene).save(buffer, format="PNG")
    return buffer.getvalue()


def coco_box(obj: SceneObject) -> list[int]:
    """The object's COCO bbox ``[x, y, width, height]`` from its pixel box."""
    left, top, right, bottom = object_box(obj)
    return [left, top, right - left, bottom - top]


def _image_entries(scenes: list[ExportedScene]) -> list[dict]:
    return [{"id": s.image_id, "file_name": s.file_name, "width": IMAGE_SIZE, "height": IMAGE_SIZE} for s in scenes]


def _info(what: str) -> dict:
    return {"description": f"vlm-studio scene world: {what}", "version": "1.0"}


def instances_json(scenes: list[ExportedScene]) -> dict:
    """COCO instances: every object of every scene as a box of its kind's category, with its
    colour, size and grid cell kept as extra keys."""
    annotations: list[dict] = []
    for s in scenes:
        for obj in s.scene.objects:
            box = coco_box(obj)
            annotations.append({"id": len(annotations) + 1, "image_id": s.image_id, "category_id": CATEGORY_IDS[obj.kind],
                                "bbox": box, "area": box[2] * box[3], "iscrowd": 0, "colour": obj.colour,
                                "size": obj.size, "row": obj.row, "col": obj.col})
    categories = [{"id": i, "name": kind, "supercategory": SUPERCATEGORY} for kind, i in CATEGORY_IDS.items()]
    return {"info": _info("object instances"), "images": _image_entries(scenes), "annotations": annotations,
            "categories": categories}


def captions_json(scenes: list[ExportedScene]) -> dict:
    """COCO captions: one ground-truth caption per image (no phantom ring: held-out truth)."""
    annotations = [{"id": s.image_id, "image_id": s.image_id, "caption": caption(s.scene)} for s in scenes]
    return {"info": _info("captions"), "images": _image_entries(scenes), "annotations": annotations}


def pope_lines(scenes: list[ExportedScene], kind: str) -> str:
    """One POPE file's text: a JSON object per question (the POPE repository's format),
    question ids counting from 1, scenes and questions in the order ``world eval`` asks them."""
    rows = [(s.file_name, q, t) for s in scenes for q, t in s.pope[kind]]
    return "".join(json.dumps({"question_id": i, "image": name, "text": q, "label": t}) + "\n"
                   for i, (name, q, t) in enumerate(rows, start=1))


def manifest_json(settings: dict, scenes: list[ExportedScene]) -> dict:
    """The manifest that maps every file back to its scene (see :func:`world_scenes`)."""
    images = [{"id": s.image_id, "file_name": s.file_name, "split": s.split, "index": s.index,
               "scene": s.scene.to_dict()} for s in scenes]
    return {"format": EXPORT_FORMAT, **settings, "caption_prompt": CAPTION_PROMPT, "pope_kinds": list(POPE_KINDS),
            "images": images}


def export_world(out: Path, splits: list[str], n_scenes: int, seed: int = 0, progress: bool = True) -> WorldExport:
    """Write ``n_scenes`` scenes of each split (as ``world eval --seed seed`` scores them) to ``out``.

    ``out`` must be absent, empty, or an export of the same settings (rewritten in place);
    every file is written atomically and the manifest last, so a folder with a manifest is whole.
    """
    out = Path(out)
    splits = _check_settings(splits, n_scenes)
    settings = _settings(splits, n_scenes, seed)
    _check_folder(out, settings)
    scenes = _asked(splits, n_scenes, seed, training_frequency(), cooccurrence())
    images = [atomic_write(out / "images" / s.file_name, png_bytes(s.scene))
              for s in tqdm(scenes, desc="export world images", disable=not progress)]
    instances = atomic_write_json(out / INSTANCES, instances_json(scenes))
    captions = atomic_write_json(out / CAPTIONS, captions_json(scenes))
    pope = {kind: atomic_write(out / pope_file(kind), pope_lines(scenes, kind).encode()) for kind in POPE_KINDS}
    manifest = atomic_write_json(out / MANIFEST, manifest_json(settings, scenes))
    return WorldExport(folder=out, manifest=manifest, images=images, instances=instances, captions=captions, pope=pope,
                       n_objects=sum(len(s.scene.objects) for s in scenes),
                       n_questions={kind: sum(len(s.pope[kind]) for s in scenes) for kind in POPE_KINDS})


def world_scenes(folder: Path) -> list[tuple[str, Scene, str]]:
    """(split, scene, image file name) of every image of an export, in export order."""
    manifest = _read_manifest(Path(folder))
    if manifest is None:
        raise InputError(f"{folder} is not a world export (no readable {MANIFEST}); make one with `vlm-studio world export`")
    return [(row["split"], Scene.from_dict(row["scene"]), row["file_name"]) for row in manifest["images"]]
