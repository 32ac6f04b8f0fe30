"""Reading a COCO-format folder: the ground truth CHAIR needs for each image.

The folder holds ``instances_*.json`` (object categories per image) and ``captions_*.json``
(reference captions per image) in ``FOLDER/annotations`` (or in ``FOLDER`` itself);
:func:`image_paths` finds the scored images in an images folder. COCO splits these files into
train and val; every file of a kind is read and merged, as the reference CHAIR code merges
``*_train2014`` and ``*_val2014``. Files are indexed with ``pycocotools`` after their
keys are checked, so that bad input is one :class:`InputError` line, never a ``KeyError``.
"""
from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pycocotools.coco import COCO

from studio.engine.errors import InputError

INSTANCES = "instances"
CAPTIONS = "captions"
# keys every entry of a list must have, per kind of file
REQUIRED = {
    INSTANCES: {"images": ("id", "file_name"), "annotations": ("id", "image_id", "category_id"),
                "categories": ("id", "name")},
    CAPTIONS: {"images": ("id", "file_name"), "annotations": ("id", "image_id", "caption")},
}


@dataclass(frozen=True)
class CocoImage:
    """One image: its file name, the names of the categories annotated in it, its reference captions."""

    image_id: int
    file_name: str
    categories: frozenset[str]
    captions: tuple[str, ...]


@dataclass(frozen=True)
class CocoData:
    """What a COCO folder holds: the category names (in id order) and every image by id."""

    annotations_dir: Path
    instances_files: tuple[Path, ...]
    captions_files: tuple[Path, ...]
    categories: tuple[str, ...]
    images: dict[int, CocoImage]


def _kind(data: object) -> str | None:
    """``instances`` or ``captions`` by the file's keys (only instances files list categories), or None."""
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(data.get("annotations"), list):
        return None
    return INSTANCES if "categories" in data else CAPTIONS


def _load(path: Path, expected: str) -> COCO:
    """The file at ``path`` indexed by pycocotools, after checking it is a whole file of the ``expected`` kind."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read {path}: {err}") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path} is not valid JSON ({err.msg} at line {err.lineno})") from None
    kind = _kind(data)
    if kind is None:
        raise InputError(f"{path} is not a COCO annotation file (it needs 'images' and 'annotations' lists)")
    if kind != expected:
        raise InputError(f"{path} is a COCO {kind} file (its keys are {', '.join(sorted(data))}), not {expected}")
    for section, keys in REQUIRED[kind].items():
        entries = data.get(section)
        if not isinstance(entries, list):
            raise InputError(f"{path}: '{section}' must be a list")
        for index, entry in enumerate(entries):
            missing = [key for key in keys if not isinstance(entry, dict) or key not in entry]
            if missing:
                raise InputError(f"{path}: {section} entry {index} has no {', '.join(repr(k) for k in missing)}")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress lines
        coco.createIndex()
    return coco


def _check_references(coco: COCO, path: Path) -> None:
    """Every annotation names an image (and, in instances files, a category) the file lists."""
    for ann in coco.anns.values():
        if ann["image_id"] not in coco.imgs:
            raise InputError(f"{path}: annotation {ann['id']} is of image {ann['image_id']}, which the file does not list")
        if coco.cats and ann["category_id"] not in coco.cats:
            raise InputError(f"{path}: annotation {ann['id']} has category {ann['category_id']}, which the file does not list")


def annotation_files(folder: str | Path) -> tuple[Path, list[Path], list[Path]]:
    """The annotations folder (``FOLDER/annotations`` if it exists, else ``FOLDER``) and its
    instances and captions files; InputError if either kind is absent."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder")
    ann_dir = folder / "annotations" if (folder / "annotations").is_dir() else folder
    instances, captions = sorted(ann_dir.glob("instances_*.json")), sorted(ann_dir.glob("captions_*.json"))
    if not instances and not captions:
        raise InputError(f"{ann_dir} has no COCO annotation files (instances_*.json and captions_*.json)")
    for found, pattern in ((instances, "instances_*.json"), (captions, "captions_*.json")):
        if not found:
            raise InputError(f"{ann_dir} has no {pattern}; CHAIR needs both instances and captions")
    return ann_dir, instances, captions


def _file_names(indexes: Sequence[tuple[Path, COCO]]) -> dict[int, str]:
    """Image id -> file name over all files; InputError if two files disagree."""
    names: dict[int, str] = {}
    seen_in: dict[int, Path] = {}
    for path, coco in indexes:
        for image_id, image in coco.imgs.items():
            if not isinstance(image["file_name"], str) or not image["file_name"]:
                raise InputError(f"{path}: image {image_id} has file_name {image['file_name']!r}, not a file name")
            if names.setdefault(image_id, image["file_name"]) != image["file_name"]:
                raise InputError(f"image {image_id} is {names[image_id]} in {seen_in[image_id]} "
                                 f"but {image['file_name']} in {path}")
            seen_in.setdefault(image_id, path)
    return names


def _category_names(indexes: Sequence[tuple[Path, COCO]]) -> dict[int, str]:
    """Category id -> name; InputError if the instances files do not share their categories."""
    first_path, first = indexes[0]
    names = {cat_id: cat["name"] for cat_id, cat in first.cats.items()}
    for path, coco in indexes[1:]:
        if {cat_id: cat["name"] for cat_id, cat in coco.cats.items()} != names:
            raise InputError(f"{path} and {first_path} have different categories")
    return names


def read_coco(folder: str | Path) -> CocoData:
    """Every image of a COCO folder with its ground-truth categories and reference captions."""
    ann_dir, instance_paths, caption_paths = annotation_files(folder)
    instances = [(path, _load(path, INSTANCES)) for path in instance_paths]
    captions = [(path, _load(path, CAPTIONS)) for path in caption_paths]
    for path, coco in instances + captions:
        _check_references(coco, path)
    cat_names = _category_names(instances)
    categories: dict[int, set[str]] = {}
    texts: dict[int, list[str]] = {}
    for _, coco in instances:
        for image_id, anns in coco.imgToAnns.items():
            categories.setdefault(image_id, set()).update(cat_names[ann["category_id"]] for ann in anns)
    for _, coco in captions:
        for image_id, anns in coco.imgToAnns.items():
            texts.setdefault(image_id, []).extend(str(ann["caption"]) for ann in anns)
    images = {image_id: CocoImage(image_id, name, frozenset(categories.get(image_id, ())), tuple(texts.get(image_id, ())))
              for image_id, name in _file_names(instances + captions).items()}
    return CocoData(annotations_dir=ann_dir, instances_files=tuple(instance_paths), captions_files=tuple(caption_paths),
                    categories=tuple(cat_names[i] for i in sorted(cat_names)), images=images)


def image_paths(images: Iterable[CocoImage], images_dir: str | Path) -> dict[int, Path]:
    """Image id -> path under ``images_dir``; InputError saying how many are missing and the first."""
    images_dir = Path(images_dir)
    paths = {image.image_id: images_dir / image.file_name for image in images}
    missing = [path for path in paths.values() if not path.is_file()]
    if missing:
        raise InputError(f"{len(missing)} of the {len(paths)} images are not in {images_dir} (first: {missing[0].name})")
    return paths
