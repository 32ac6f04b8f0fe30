"""POPE (Li et al. 2023, "Evaluating Object Hallucination in Large Vision-Language Models").

Reads the POPE repository's question files (one JSON object per line with ``question_id``,
``image``, ``text`` and ``label``) and scores answers the way its ``evaluate.py`` does:

- an answer is cut at its first ``.``, its commas are removed, it is split on single spaces,
  and it counts as "no" if one of the words is exactly ``No``, ``not`` or ``no``; anything
  else, including an empty answer, counts as "yes" (so "NO" and "Not really" are "yes", as there);
- "yes" is the positive class: accuracy, precision, recall, F1, and the yes-ratio (the share
  of answers judged "yes").

Departure: where the reference divides by zero (no "yes" answers, or no "yes" labels) the
score is 0.0 instead of an exception, so a resampled subset can always be scored.

Counts are kept per question (:class:`PopeCounts`) so that a paired bootstrap can resample
items and rescore them with :func:`pope_from_counts`.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from studio.engine.errors import InputError

LABELS = ("yes", "no")
KEYS = ("question_id", "image", "text", "label")
NO_WORDS = ("No", "not", "no")


@dataclass(frozen=True)
class PopeQuestion:
    """One line of a POPE question file; ``source`` and ``line`` say where it was read."""

    question_id: int | str
    image: str
    text: str
    label: str
    source: str
    line: int


@dataclass(frozen=True)
class PopeCounts:
    """Confusion counts of some answers (positive = "yes"); ``yes`` counts answers judged yes."""

    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0
    yes: int = 0
    n: int = 0

    def __add__(self, other: PopeCounts) -> PopeCounts:
        return PopeCounts(self.tp + other.tp, self.fp + other.fp, self.tn + other.tn, self.fn + other.fn,
                          self.yes + other.yes, self.n + other.n)


@dataclass(frozen=True)
class PopeScore:
    """POPE's five numbers and the counts they come from."""

    accuracy: float
    precision: float
    recall: float
    f1: float
    yes_ratio: float
    counts: PopeCounts


def _check_line(data: object, path: Path, number: int) -> PopeQuestion:
    """The question of line ``number`` of ``path``, or InputError naming the line and what is wrong."""
    where = f"{path} line {number}"
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a JSON object with {', '.join(KEYS)}")
    missing = [key for key in KEYS if key not in data]
    if missing:
        raise InputError(f"{where}: missing {', '.join(missing)}")
    qid, image, text, label = (data[key] for key in KEYS)
    if isinstance(qid, bool) or not isinstance(qid, (int, str)):
        raise InputError(f"{where}: question_id must be a number or a string, not {qid!r}")
    image_path = PurePosixPath(image) if isinstance(image, str) else None
    if image_path is None or not image or image_path.is_absolute() or ".." in image_path.parts:
        raise InputError(f"{where}: image must be a file name relative to the images folder, not {image!r}")
    if not isinstance(text, str):
        raise InputError(f"{where}: text must be a string, not {text!r}")
    if label not in LABELS:
        raise InputError(f"{where}: label must be \"yes\" or \"no\", not {label!r}")
    return PopeQuestion(qid, image, text, label, str(path), number)


def read_pope_file(path: str | Path) -> list[PopeQuestion]:
    """Every question of a POPE file, in order; blank lines are skipped.

    A line that is not a JSON object, lacks a key, has a label other than "yes"/"no", or
    repeats a question id raises :class:`InputError` naming the file and line number.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read POPE questions from {path}: {err}") from None
    questions: list[PopeQuestion] = []
    first_line: dict[int | str, int] = {}
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(f"{path} line {number}: not valid JSON ({err.msg})") from None
        question = _check_line(data, path, number)
        if question.question_id in first_line:
            raise InputError(f"{path} line {number}: question_id {question.question_id!r} already used on line "
                             f"{first_line[question.question_id]}")
        first_line[question.question_id] = number
        questions.append(question)
    if not questions:
        raise InputError(f"{path} holds no POPE questions")
    return questions


def find_images(files: Sequence[str | Path], images_dir: str | Path) -> dict[str, Path]:
    """The path under ``images_dir`` of every image the question ``files`` name.

    Raises :class:`InputError` if any is missing, saying how many and naming the first one
    and the file that asks about it.
    """
    images_dir = Path(images_dir)
    named_in: dict[str, str] = {}
    for file in files:
        for question in read_pope_file(file):
            named_in.setdefault(question.image, question.source)
    paths = {name: images_dir / name for name in named_in}
    missing = [name for name, path in paths.items() if not path.is_file()]
    if missing:
        raise InputError(f"{len(missing)} of the {len(paths)} images the POPE questions name are not in {images_dir} "
                         f"(first: {missing[0]}, asked about in {named_in[missing[0]]})")
    return paths


def judge(answer: str) -> str:
    """"yes" or "no" for a free-text answer, as POPE's ``evaluate.py`` reads it."""
    first_sentence = answer.split(".")[0]
    words = first_sentence.replace(",", "").split(" ")
    return "no" if any(word in NO_WORDS for word in words) else "yes"


def pope_counts(answer: str, label: str) -> PopeCounts:
    """The counts of one answer to a question whose truth is ``label`` ("yes" or "no")."""
    if label not in LABELS:
        raise ValueError(f"label must be 'yes' or 'no', not {label!r}")
    said_yes, is_yes = judge(answer) == "yes", label == "yes"
    return PopeCounts(tp=int(said_yes and is_yes), fp=int(said_yes and not is_yes), tn=int(not said_yes and not is_yes),
                      fn=int(not said_yes and is_yes), yes=int(said_yes), n=1)


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def pope_from_counts(counts: Iterable[PopeCounts]) -> PopeScore:
    """POPE's numbers from per-item counts (their sum); a resample of items is scored the same way."""
    total = sum(counts, PopeCounts())
    precision = _ratio(total.tp, total.tp + total.fp)
    recall = _ratio(total.tp, total.tp + total.fn)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return PopeScore(accuracy=_ratio(total.tp + total.tn, total.n), precision=precision, recall=recall, f1=f1,
                     yes_ratio=_ratio(total.yes, total.n), counts=total)


def pope_score(pairs: Iterable[tuple[str, str]]) -> PopeScore:
    """Score (answer, label) pairs."""
    return pope_from_counts(pope_counts(answer, label) for answer, label in pairs)
