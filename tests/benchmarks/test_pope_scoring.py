"""POPE: reading question files, the official answer normalisation, and the five numbers."""
from __future__ import annotations

import json

import pytest

from studio.benchmarks.pope import (
    PopeCounts,
    find_images,
    judge,
    pope_counts,
    pope_from_counts,
    pope_score,
    read_pope_file,
)
from studio.engine.errors import InputError


def write_lines(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def q(qid, image="a.jpg", label="yes"):
    return {"question_id": qid, "image": image, "text": "Is there a dog in the image?", "label": label}


@pytest.mark.parametrize(("answer", "expected"), [
    ("No, there is not.", "no"),
    ("Yes.", "yes"),
    ("There is no dog", "no"),
    ("Yes, there is a dog. There is no cat.", "yes"),   # only the first sentence counts
    ("There is not a dog in the image", "no"),
    ("no", "no"),
    ("No", "no"),
    ("NO", "yes"),                                     # the reference matches exactly No/not/no
    ("Not really", "yes"),
    ("nothing here", "yes"),                           # whole words only
    ("", "yes"),
    ("Yes, no doubt", "no"),                           # any no-word in the first sentence wins
    ("No,there", "yes"),                               # comma removed, so the word is 'Nothere'
    ("Yes\nno", "yes"),                                # split on spaces only: one word 'Yes\nno'
])
def test_judge_follows_pope_evaluate(answer, expected):
    assert judge(answer) == expected


def test_scores_hand_computed_case():
    # labels/answers:       yes/yes (tp)  yes/no (fn)  no/no (tn)  no/yes (fp)  yes/yes (tp)  no/no (tn)
    pairs = [("Yes.", "yes"), ("No, there is not.", "yes"), ("There is no dog", "no"), ("Yes, there is.", "no"),
             ("Yes", "yes"), ("no", "no")]
    score = pope_score(pairs)
    assert score.counts == PopeCounts(tp=2, fp=1, tn=2, fn=1, yes=3, n=6)
    assert score.accuracy == pytest.approx(4 / 6)
    assert score.precision == pytest.approx(2 / 3)
    assert score.recall == pytest.approx(2 / 3)
    assert score.f1 == pytest.approx(2 / 3)
    assert score.yes_ratio == pytest.approx(3 / 6)


def test_precision_and_recall_differ():
    # tp=1, fp=2, fn=0, tn=1 -> precision 1/3, recall 1, f1 = 2*(1/3)/(4/3) = 0.5
    score = pope_score([("Yes", "yes"), ("Yes", "no"), ("Sure", "no"), ("No", "no")])
    assert (score.precision, score.recall, score.f1) == (pytest.approx(1 / 3), 1.0, pytest.approx(0.5))
    assert score.yes_ratio == pytest.approx(0.75)


def test_per_item_counts_sum_to_the_score():
    items = [pope_counts("Yes", "yes"), pope_counts("No", "yes"), pope_counts("No", "no")]
    assert items[1] == PopeCounts(fn=1, n=1)
    resample = [items[0], items[0], items[1]]  # a bootstrap draw repeats items
    score = pope_from_counts(resample)
    assert score.counts == PopeCounts(tp=2, fn=1, yes=2, n=3)
    assert score.recall == pytest.approx(2 / 3) and score.precision == 1.0


def test_no_yes_answers_scores_zero_not_an_error():
    score = pope_score([("No", "yes"), ("No", "no")])
    assert (score.precision, score.recall, score.f1, score.accuracy) == (0.0, 0.0, 0.0, 0.5)


def test_reads_question_file(tmp_path):
    path = write_lines(tmp_path / "coco_pope_random.json", [q(1), "", q(2, "b.jpg", "no")])
    questions = read_pope_file(path)
    assert [(x.question_id, x.image, x.label, x.line) for x in questions] == [(1, "a.jpg", "yes", 1), (2, "b.jpg", "no", 3)]
    assert questions[0].source == str(path)


@pytest.mark.parametrize(("bad_line", "says"), [
    ("{not json", "not valid JSON"),
    ('["a", "list"]', "expected a JSON object"),
    (json.dumps({"question_id": 2, "image": "a.jpg", "label": "yes"}), "missing text"),
    (json.dumps(q(2, label="Yes")), "label must be"),
    (json.dumps(q(2, image="../secret.jpg")), "image must be"),
    (json.dumps(q(1)), "question_id 1 already used on line 1"),
])
def test_bad_line_names_file_and_line(tmp_path, bad_line, says):
    path = write_lines(tmp_path / "pope.json", [q(1), bad_line])
    with pytest.raises(InputError) as err:
        read_pope_file(path)
    message = str(err.value)
    assert f"{path} line 2" in message and says in message and "\n" not in message


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.json"
    path.write_text("\n")
    with pytest.raises(InputError, match="no POPE questions"):
        read_pope_file(path)


def test_find_images_maps_and_reports_first_missing(tmp_path):
    images = tmp_path / "val2014"
    images.mkdir()
    (images / "a.jpg").write_bytes(b"x")
    first = write_lines(tmp_path / "random.json", [q(1, "a.jpg")])
    second = write_lines(tmp_path / "popular.json", [q(1, "a.jpg"), q(2, "gone1.jpg"), q(3, "gone2.jpg")])
    assert find_images([first], images) == {"a.jpg": images / "a.jpg"}
    with pytest.raises(InputError) as err:
        find_images([first, second], images)
    assert str(err.value) == (f"2 of the 3 images the POPE questions name are not in {images} "
                              f"(first: gone1.jpg, asked about in {second})")
