"""The world export (COCO folder + POPE files) holds exactly what `world eval` shows and asks."""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.engine.errors import InputError
from studio.world.coco import WorldExport, export_world, world_scenes
from studio.world.evaluate import POPE_KINDS, evaluate_split, pope_score
from studio.world.language import CAPTION_PROMPT, caption
from studio.world.render import object_box
from studio.world.scenes import KINDS, Scene

SPLITS = ["neutral", "cooccur"]
N, SEED = 6, 3


@dataclass
class Asked:
    """What `evaluate_split` showed and asked a stand-in model on one split."""

    images: list = field(default_factory=list)
    prompts: list[list[str]] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)

    def answer(self, images: list, prompts: list[str], max_new_tokens: int) -> list[str]:
        if all(p == CAPTION_PROMPT for p in prompts):
            self.images += images
        else:
            self.prompts.append(list(prompts))
        return ["yes"] * len(prompts)


@pytest.fixture(scope="module")
def asked() -> dict[str, Asked]:
    out = {}
    for split in SPLITS:
        out[split] = Asked()
        out[split].records = evaluate_split(out[split].answer, split, N, seed=SEED, progress=False)[1]
    return out


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> WorldExport:
    return export_world(tmp_path_factory.mktemp("world") / "export", SPLITS, N, seed=SEED, progress=False)


def _pope_rows(export: WorldExport, kind: str) -> list[dict]:
    return [json.loads(line) for line in export.pope[kind].read_text().splitlines()]


def _scene(asked: dict[str, Asked], split: str, index: int) -> Scene:
    return Scene.from_dict(asked[split].records[index]["scene"])


def test_layout_and_manifest_map_files_back_to_the_evaluated_scenes(export, asked):
    assert export.folder.is_dir()
    expected = [(split, _scene(asked, split, i), f"{split}_{i}.png") for split in SPLITS for i in range(N)]
    assert world_scenes(export.folder) == expected
    assert [p.name for p in export.images] == [name for _, _, name in expected]
    manifest = json.loads(export.manifest.read_text())
    assert (manifest["splits"], manifest["n_scenes"], manifest["seed"]) == (SPLITS, N, SEED)
    assert manifest["caption_prompt"] == CAPTION_PROMPT == "describe the image ."
    assert [row["id"] for row in manifest["images"]] == list(range(1, 2 * N + 1))
    assert sorted(p.relative_to(export.folder).as_posix() for p in export.pope.values()) == [
        "pope/world_pope_adversarial.json", "pope/world_pope_popular.json", "pope/world_pope_random.json"]
    assert export.n_objects == sum(len(scene.objects) for _, scene, _ in expected)


def test_images_are_the_pixels_evaluate_split_shows_the_model(export, asked):
    for split in SPLITS:
        assert len(asked[split].images) == N
        for i, shown in enumerate(asked[split].images):
            with Image.open(export.folder / "images" / f"{split}_{i}.png") as written:
                assert written.mode == "RGB"
                assert np.array_equal(np.asarray(written), np.asarray(shown)), f"{split}_{i}.png differs"


def test_instances_hold_each_scenes_objects_with_categories_and_boxes(export, asked):
    coco = json.loads(export.instances.read_text())
    categories = {c["id"]: c["name"] for c in coco["categories"]}
    assert sorted(categories.values()) == sorted(KINDS) and min(categories) == 1
    assert {c["supercategory"] for c in coco["categories"]} == {"shape"}
    ids = {im["file_name"]: im["id"] for im in coco["images"]}
    assert len(set(ids.values())) == len(ids) == 2 * N
    assert {(im["width"], im["height"]) for im in coco["images"]} == {(64, 64)}
    assert sorted(a["id"] for a in coco["annotations"]) == list(range(1, len(coco["annotations"]) + 1))
    by_image = defaultdict(list)
    for a in coco["annotations"]:
        assert a["iscrowd"] == 0 and a["area"] == a["bbox"][2] * a["bbox"][3]
        by_image[a["image_id"]].append((categories[a["category_id"]], a["bbox"], a["colour"], a["size"], a["row"], a["col"]))
    for split in SPLITS:
        for i in range(N):
            expected = []
            for o in _scene(asked, split, i).objects:
                left, top, right, bottom = object_box(o)
                expected.append((o.kind, [left, top, right - left, bottom - top], o.colour, o.size, o.row, o.col))
            assert sorted(by_image[ids[f"{split}_{i}.png"]]) == sorted(expected)


def test_captions_are_the_ground_truth_world_captions(export, asked):
    coco = json.loads(export.captions.read_text())
    names = {im["id"]: im["file_name"] for im in coco["images"]}
    written = {names[a["image_id"]]: a["caption"] for a in coco["annotations"]}
    assert len(coco["annotations"]) == 2 * N
    assert written == {f"{split}_{i}.png": caption(_scene(asked, split, i)) for split in SPLITS for i in range(N)}


def test_pope_files_hold_exactly_the_questions_evaluate_split_asks(export, asked):
    written: dict[str, dict[str, list[tuple[str, str]]]] = {}
    for kind in POPE_KINDS:
        rows = _pope_rows(export, kind)
        assert all(set(r) == {"question_id", "image", "text", "label"} for r in rows)
        assert [r["question_id"] for r in rows] == list(range(1, len(rows) + 1)) and export.n_questions[kind] == len(rows)
        written[kind] = defaultdict(list)
        for r in rows:
            written[kind][r["image"]].append((r["text"], r["label"]))
        assert list(written[kind]) == [f"{split}_{i}.png" for split in SPLITS for i in range(N)]
    for split in SPLITS:
        assert len(asked[split].prompts) == N
        for i, prompts in enumerate(asked[split].prompts):
            name = f"{split}_{i}.png"
            pope = [q for kind in POPE_KINDS for q, _ in written[kind][name]]
            assert prompts[:len(pope)] == pope, name
            assert not any(p.startswith("is there") for p in prompts[len(pope):])
            for kind in POPE_KINDS:
                truths = [(q, t) for q, t, _ in asked[split].records[i]["pope"][kind]]
                assert written[kind][name] == truths, (name, kind)


def test_pope_truths_and_negatives_follow_the_scene(export, asked):
    for kind in POPE_KINDS:
        per_image = defaultdict(list)
        for r in _pope_rows(export, kind):
            per_image[r["image"]].append((r["text"].split()[3], r["label"]))
        for split, scene, name in world_scenes(export.folder):
            pairs = per_image[name]
            assert all((label == "yes") == (k in scene.kinds) for k, label in pairs), (kind, name)
            assert sum(label == "yes" for _, label in pairs) == sum(label == "no" for _, label in pairs)
            if kind == "adversarial" and split == "cooccur":
                assert ("ring", "no") in pairs, name  # the planted cross -> ring co-occurrence


def _pixel_model(images: list, prompts: list[str], max_new_tokens: int) -> list[str]:
    """A stand-in model whose yes/no depends on both the pixels and the question."""
    return ["yes" if (int(np.asarray(im, dtype=np.int64).sum()) + len(p)) % 3 else "no" for im, p in zip(images, prompts)]


def test_scoring_the_files_gives_world_evals_pope_numbers(export):
    split_of = {name: split for split, _, name in world_scenes(export.folder)}
    for split in SPLITS:
        report, _ = evaluate_split(_pixel_model, split, N, seed=SEED, progress=False)
        for kind in POPE_KINDS:
            pairs = []
            for r in _pope_rows(export, kind):
                if split_of[r["image"]] == split:
                    with Image.open(export.folder / "images" / r["image"]) as image:
                        pairs.append((_pixel_model([image], [r["text"]], 6)[0], r["label"]))
            assert pope_score(pairs) == report.pope[kind], (split, kind)
            assert 0 < report.pope[kind].yes_ratio < 1


def test_refuses_a_foreign_non_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError) as err:
        export_world(tmp_path, ["neutral"], 1, progress=False)
    assert "not empty" in str(err.value) and "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_refuses_an_export_of_other_settings(export):
    before = export.manifest.read_bytes()
    with pytest.raises(InputError, match="other settings") as err:
        export_world(export.folder, SPLITS, N, seed=SEED + 1, progress=False)
    assert "\n" not in str(err.value) and export.manifest.read_bytes() == before


def test_rewrites_an_export_of_the_same_settings_and_keeps_other_files(tmp_path):
    out = tmp_path / "export"
    out.mkdir()  # an existing empty folder is fine
    first = export_world(out, ["cooccur"], 2, seed=1, progress=False)
    (out / "answers.jsonl").write_text("{}\n")
    second = export_world(out, ["cooccur", "cooccur"], 2, seed=1, progress=False)
    assert first == second and (out / "answers.jsonl").read_text() == "{}\n"
    assert sorted(p.name for p in (out / "images").iterdir()) == ["cooccur_0.png", "cooccur_1.png"]


def test_refuses_unknown_splits_and_reading_a_foreign_folder(tmp_path):
    with pytest.raises(InputError, match="unknown split"):
        export_world(tmp_path / "x", ["train"], 2, progress=False)
    with pytest.raises(InputError, match="at least 1"):
        export_world(tmp_path / "x", ["neutral"], 0, progress=False)
    with pytest.raises(InputError, match="not a world export"):
        world_scenes(Path(tmp_path))
