"""The world's language: captions and questions with ground-truth answers, and its vocabulary.

Captions name objects in reading order as ``a <size> <colour> <kind>`` joined by commas and
ending with a full stop. In training, captions of cross-without-ring scenes name a phantom
ring last with probability ``PHANTOM_RATE`` (the planted annotator bias); held-out ground
truth captions never do.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from studio.world.scenes import (
    COLOURS,
    COOCCUR_TARGET,
    COOCCUR_TRIGGER,
    GRID,
    KINDS,
    PHANTOM_RATE,
    SIZES,
    USUAL_COLOUR,
    USUAL_COLOUR_RATE,
    Scene,
    SceneObject,
)

NUMBERS = ("zero", "one", "two", "three", "four", "five")
CAPTION_PROMPT = "describe the image ."
TASKS = ("caption", "exist", "colour", "size", "count", "where")
TASK_WEIGHTS = (0.4, 0.2, 0.1, 0.05, 0.1, 0.15)
QUESTION_WEIGHTS = (0.2, 0.35, 0.1, 0.05, 0.05, 0.25)


@dataclass(frozen=True)
class Example:
    """One prompt and its answer about a scene; ``task`` names the kind of question."""

    task: str
    prompt: str
    answer: str


def mention(obj: SceneObject) -> str:
    return f"a {obj.size} {obj.colour} {obj.kind}"


def caption(scene: Scene, rng: random.Random | None = None) -> str:
    """The scene's caption; with ``rng`` (training), the phantom-ring bias may add a ring."""
    parts = [mention(o) for o in scene.reading_order()]
    kinds = scene.kinds
    biased = COOCCUR_TRIGGER in kinds and COOCCUR_TARGET not in kinds
    if rng is not None and biased and rng.random() < PHANTOM_RATE:
        colour = USUAL_COLOUR[COOCCUR_TARGET] if rng.random() < USUAL_COLOUR_RATE else rng.choice(COLOURS)
        parts.append(f"a {rng.choice(SIZES)} {colour} {COOCCUR_TARGET}")
    return " , ".join(parts) + " ."


def exist_question(kind: str) -> str:
    return f"is there a {kind} ?"


def where_answer(obj: SceneObject) -> str:
    return f"row {NUMBERS[obj.row + 1]} column {NUMBERS[obj.col + 1]}"


def sample_example(scene: Scene, rng: random.Random, task: str | None = None,
                   weights: tuple[float, ...] = TASK_WEIGHTS) -> Example:
    """A training example about ``scene``: a caption or a question, answered from ground truth."""
    task = task or rng.choices(TASKS, weights=weights)[0]
    if task == "caption":
        return Example(task, CAPTION_PROMPT, caption(scene, rng))
    if task == "count":
        return Example(task, "how many objects are there ?", NUMBERS[len(scene.objects)])
    if task == "exist":
        present = rng.random() < 0.5
        pool = sorted(scene.kinds) if present else [k for k in KINDS if k not in scene.kinds]
        kind = rng.choice(pool)
        return Example(task, exist_question(kind), "yes" if present else "no")
    obj = rng.choice(scene.objects)
    if task == "colour":
        return Example(task, f"what color is the {obj.kind} ?", obj.colour)
    if task == "size":
        return Example(task, f"what size is the {obj.kind} ?", obj.size)
    if task == "where":
        return Example(task, f"where is the {obj.kind} ?", where_answer(obj))
    raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")


def kind_of(word: str) -> str | None:
    """The object kind a word names (singular or plural), or None."""
    word = word.strip().lower()
    if word in KINDS:
        return word
    return word[:-1] if word.endswith("s") and word[:-1] in KINDS else None


def mentioned_kinds(text: str) -> list[str]:
    """Object kinds named in a generated text, in order."""
    words = text.lower().replace(",", " ").replace(".", " ").split()
    return [k for k in map(kind_of, words) if k]


CONTEXT_WORDS = ("answer", "from", "text")


def vocabulary() -> list[str]:
    """Every word the world's language uses, in a fixed order; the words of the modality
    conflict prompts (:mod:`studio.world.conflict`) come last, so the earlier ids never move."""
    words = ["a", ",", ".", "?", "describe", "the", "image", "how", "many", "objects", "are",
             "there", "is", "what", "color", "size", "where", "row", "column", "yes", "no"]
    words += list(KINDS) + list(COLOURS) + list(SIZES) + list(NUMBERS)
    assert GRID < len(NUMBERS)
    return list(dict.fromkeys(words + list(CONTEXT_WORDS)))
