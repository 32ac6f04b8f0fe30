"""Modality preference on conflict items: which side each answer follows, counted per style.

Following MC² (Zhang et al. 2025, "Evaluating and Steering Modality Preferences in Multimodal
Large Language Models"): a conflict item's text claims a value the image contradicts, and
the preference is read from which side the answer follows.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

from studio.sharding import Workers
from studio.steering.vectors import Steering, steered_answers
from studio.world.conflict import STYLES, ConflictItem, sample_items
from studio.world.render import render


def answer_items(session, items: list[ConflictItem], steering: Steering | None = None,
                 batch: int = 64, max_new_tokens: int = 2) -> list[str]:
    """Each item's answer, greedy, optionally steered (alpha 0 runs the plain model); the batches
    are shared out over the processes of a data-parallel launch (:meth:`Workers.map_batches`)."""
    def answer(chunk: list[ConflictItem]) -> list[str]:
        images, prompts = [render(i.scene) for i in chunk], [i.prompt for i in chunk]
        if steering is not None and steering.alpha:
            return steered_answers(session, images, prompts, max_new_tokens, steering)
        return session.answer_batch(images, prompts, max_new_tokens)
    return Workers.from_env().map_batches(_chunks(items, batch), answer)


def _chunks(items: list[ConflictItem], batch: int) -> list[list[ConflictItem]]:
    return [items[start:start + batch] for start in range(0, len(items), batch)]


@dataclass
class Preference:
    """How many answers followed the image, the text, or neither."""

    image: int = 0
    text: int = 0
    other: int = 0

    @property
    def n(self) -> int:
        return self.image + self.text + self.other

    @property
    def image_ratio(self) -> float:
        """Share of all answers that follow the image."""
        return self.image / max(1, self.n)

    def to_dict(self) -> dict:
        return asdict(self) | {"image_ratio": self.image_ratio}


def preference(items: list[ConflictItem], answers: list[str],
               answerable: list[bool] | None = None) -> dict[str, Preference]:
    """Per instruction style and overall ("all"); with ``answerable`` (per item), also over the
    items the model answers right from the image alone (keys "<style> answerable")."""
    counts: dict[str, Counter] = {}
    for n, (item, answer) in enumerate(zip(items, answers)):
        side = item.follows(answer)
        keys = [item.style, "all"]
        if answerable is not None and answerable[n]:
            keys += [f"{item.style} answerable", "all answerable"]
        for key in keys:
            counts.setdefault(key, Counter())[side] += 1
    return {k: Preference(c["image"], c["text"], c["other"]) for k, c in counts.items()}


def image_answerable(session, items: list[ConflictItem], batch: int = 64) -> list[bool]:
    """Whether the model answers each item's bare question (no claim, no instruction) right
    from the image: a conflict can only be resolved toward the image where the model sees it."""
    answers = Workers.from_env().map_batches(
        _chunks(items, batch), lambda chunk: session.answer_batch([render(i.scene) for i in chunk],
                                                                  [i.question for i in chunk], 2))
    return [i.follows(a) == "image" for i, a in zip(items, answers)]


DIRECTION_ITEMS_START = 100_000


def direction_items(n: int) -> list[ConflictItem]:
    """Conflict items of every style for fitting directions, on scenes apart from the held-out ones."""
    return [item for style in STYLES for item in sample_items(n, style, start=DIRECTION_ITEMS_START)]


def training_items(n: int) -> list[ConflictItem]:
    """Uninstructed conflict items for training a steering vector (the fitting scenes)."""
    return sample_items(n, "neutral", start=DIRECTION_ITEMS_START)


def held_out_items(n: int) -> tuple[list[ConflictItem], list[ConflictItem]]:
    """(conflict items of every style, matched neutral items) for measuring and sweeping."""
    conflict = [item for style in STYLES for item in sample_items(n, style)]
    return conflict, sample_items(n, "neutral", conflict=False)


