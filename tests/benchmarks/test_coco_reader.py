"""Reading COCO-format folders: merged files, ground truth per image, and one-line errors."""
from __future__ import annotations

import json

import pytest

from studio.benchmarks.chair import ground_truth, vocabulary_for
from studio.benchmarks.coco import CocoImage, image_paths, read_coco
from studio.engine.errors import InputError

CATEGORIES = [{"id": 1, "name": "dog", "supercategory": "animal"}, {"id": 2, "name": "frisbee", "supercategory": "sports"},
              {"id": 3, "name": "person", "supercategory": "person"}]
IMAGES = [{"id": 10, "file_name": "park.jpg"}, {"id": 11, "file_name": "empty.jpg"}]


def instances(images=IMAGES, annotations=None, categories=CATEGORIES):
    annotations = annotations if annotations is not None else [
        {"id": 1, "image_id": 10, "category_id": 1, "bbox": [0, 0, 5, 5]},
        {"id": 2, "image_id": 10, "category_id": 1, "bbox": [5, 5, 5, 5]},
        {"id": 3, "image_id": 10, "category_id": 2, "bbox": [1, 1, 2, 2]},
    ]
    return {"images": images, "annotations": annotations, "categories": categories}


def captions(images=IMAGES, annotations=None):
    annotations = annotations if annotations is not None else [
        {"id": 7, "image_id": 10, "caption": "A person throws a frisbee to his dog."},
        {"id": 8, "image_id": 10, "caption": "A dog leaps in a park."},
        {"id": 9, "image_id": 11, "caption": "An empty field."},
    ]
    return {"images": images, "annotations": annotations}


def folder(tmp_path, files):
    ann = tmp_path / "coco" / "annotations"
    ann.mkdir(parents=True)
    for name, data in files.items():
        (ann / name).write_text(data if isinstance(data, str) else json.dumps(data))
    return tmp_path / "coco"


def test_reads_images_categories_and_captions(tmp_path):
    data = read_coco(folder(tmp_path, {"instances_val.json": instances(), "captions_val.json": captions()}))
    assert data.categories == ("dog", "frisbee", "person")
    assert data.images == {
        10: CocoImage(10, "park.jpg", frozenset({"dog", "frisbee"}),
                      ("A person throws a frisbee to his dog.", "A dog leaps in a park.")),
        11: CocoImage(11, "empty.jpg", frozenset(), ("An empty field.",)),
    }
    assert data.annotations_dir == tmp_path / "coco" / "annotations"
    # ground truth = instance categories plus what the reference captions name (the person);
    # three categories are no COCO, so their vocabulary has no synonyms
    vocab = vocabulary_for(data.categories)
    assert "man" not in vocab.objects
    park = data.images[10]
    assert ground_truth(park.categories, park.captions, vocab) == {"dog", "frisbee", "person"}


def test_merges_train_and_val_files(tmp_path):
    train = instances(images=[{"id": 20, "file_name": "train.jpg"}],
                      annotations=[{"id": 5, "image_id": 20, "category_id": 3}])
    data = read_coco(folder(tmp_path, {"instances_val.json": instances(), "instances_train.json": train,
                                       "captions_val.json": captions()}))
    assert sorted(data.images) == [10, 11, 20]
    assert data.images[20] == CocoImage(20, "train.jpg", frozenset({"person"}), ())
    assert len(data.instances_files) == 2


def test_files_in_the_folder_itself(tmp_path):
    (tmp_path / "instances_x.json").write_text(json.dumps(instances()))
    (tmp_path / "captions_x.json").write_text(json.dumps(captions()))
    assert sorted(read_coco(tmp_path).images) == [10, 11]


def one_line_error(path) -> str:
    with pytest.raises(InputError) as err:
        read_coco(path)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_captions_file_given_as_instances(tmp_path):
    root = folder(tmp_path, {"instances_val.json": captions(), "captions_val.json": captions()})
    message = one_line_error(root)
    assert "instances_val.json is a COCO captions file" in message and message.endswith("not instances")


def test_instances_file_given_as_captions(tmp_path):
    root = folder(tmp_path, {"instances_val.json": instances(), "captions_val.json": instances()})
    assert "captions_val.json is a COCO instances file" in one_line_error(root)


def test_empty_folder(tmp_path):
    (tmp_path / "annotations").mkdir()
    assert one_line_error(tmp_path) == f"{tmp_path / 'annotations'} has no COCO annotation files " \
                                       "(instances_*.json and captions_*.json)"


def test_missing_folder(tmp_path):
    assert "is not a folder" in one_line_error(tmp_path / "nowhere")


def test_captions_file_missing(tmp_path):
    assert "has no captions_*.json" in one_line_error(folder(tmp_path, {"instances_val.json": instances()}))


@pytest.mark.parametrize(("instances_data", "says"), [
    ("{broken", "is not valid JSON"),
    ([1, 2], "is not a COCO annotation file"),
    (instances(annotations=[{"id": 1, "image_id": 10}]), "annotations entry 0 has no 'category_id'"),
    (instances(annotations=[{"id": 1, "image_id": 99, "category_id": 1}]), "annotation 1 is of image 99"),
    (instances(annotations=[{"id": 1, "image_id": 10, "category_id": 9}]), "annotation 1 has category 9"),
    (instances(images=[{"id": 10}]), "images entry 0 has no 'file_name'"),
])
def test_malformed_instances(tmp_path, instances_data, says):
    root = folder(tmp_path, {"instances_val.json": instances_data, "captions_val.json": captions()})
    assert says in one_line_error(root)


def test_files_disagreeing_on_a_file_name(tmp_path):
    renamed = captions(images=[{"id": 10, "file_name": "other.jpg"}, {"id": 11, "file_name": "empty.jpg"}])
    message = one_line_error(folder(tmp_path, {"instances_val.json": instances(), "captions_val.json": renamed}))
    assert "image 10 is park.jpg in" in message and "but other.jpg in" in message


def test_image_paths_reports_missing_images(tmp_path):
    data = read_coco(folder(tmp_path, {"instances_val.json": instances(), "captions_val.json": captions()}))
    images_dir = tmp_path / "val"
    images_dir.mkdir()
    (images_dir / "park.jpg").write_bytes(b"x")
    assert image_paths([data.images[10]], images_dir) == {10: images_dir / "park.jpg"}
    with pytest.raises(InputError) as err:
        image_paths(data.images.values(), images_dir)
    assert str(err.value) == f"1 of the 2 images are not in {images_dir} (first: empty.jpg)"
