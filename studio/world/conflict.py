"""Modality-conflict items in the style of MC² (Zhang et al., "Evaluating and Steering Modality
Preferences in Multimodal Large Language Models", 2025): the prompt carries a text claim
about an object's colour or size, the image shows the truth, and a question asks for it.

In a *conflict* item the claim disagrees with the image, so the answer reveals which modality
the model followed; in a matched *non-conflict* item the claim agrees. Three instruction
styles: none (``neutral``), "answer from the image ." and "answer from the text .".

Training plants a modality preference the way the other biases are planted: with no
instruction, annotators answer a conflicting claim from the text with probability
``TEXT_PREFERENCE_RATE``; instructed examples follow their instruction.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Literal

from studio.world.language import Example
from studio.world.scenes import COLOURS, SIZES, Scene, SceneObject, sample_scene

Style = Literal["neutral", "image", "text"]
STYLES: tuple[str, ...] = ("neutral", "image", "text")
INSTRUCTIONS = {"neutral": "", "image": "answer from the image .", "text": "answer from the text ."}
ATTRIBUTES = ("colour", "size")
TEXT_PREFERENCE_RATE = 0.7
CONFLICT_SEED_BASE = 4 * 10**9


@dataclass(frozen=True)
class ConflictItem:
    """One prompt with both sides' answers; ``conflict`` is False when the claim is true."""

    scene: Scene
    kind: str
    attribute: str
    style: str
    image_answer: str
    text_answer: str

    @property
    def conflict(self) -> bool:
        return self.image_answer != self.text_answer

    @property
    def prompt(self) -> str:
        return conflict_prompt(self.kind, self.attribute, self.text_answer, self.style)

    @property
    def question(self) -> str:
        """The bare question, without claim or instruction."""
        return question(self.kind, self.attribute)

    def follows(self, answer: str) -> str:
        """"image", "text" or "other" for a model's answer (first word)."""
        word = (answer.split() or [""])[0].strip().lower()
        if word == self.image_answer:
            return "image"
        return "text" if word == self.text_answer else "other"

    def to_dict(self) -> dict:
        return asdict(self) | {"scene": self.scene.to_dict(), "prompt": self.prompt}


def question(kind: str, attribute: str) -> str:
    return f"what color is the {kind} ?" if attribute == "colour" else f"what size is the {kind} ?"


def conflict_prompt(kind: str, attribute: str, claimed: str, style: str) -> str:
    """The claim, the instruction (if any) and the question, as one user turn."""
    return " ".join(p for p in (f"the {kind} is {claimed} .", INSTRUCTIONS[style], question(kind, attribute)) if p)


def _values(attribute: str) -> tuple[str, ...]:
    return COLOURS if attribute == "colour" else SIZES


def _truth(obj: SceneObject, attribute: str) -> str:
    return obj.colour if attribute == "colour" else obj.size


def make_item(scene: Scene, rng: random.Random, style: str, conflict: bool) -> ConflictItem:
    """An item about a randomly chosen object of ``scene`` (kinds are unique within a scene)."""
    obj = rng.choice(scene.objects)
    attribute = rng.choice(ATTRIBUTES)
    truth = _truth(obj, attribute)
    claimed = rng.choice([v for v in _values(attribute) if v != truth]) if conflict else truth
    return ConflictItem(scene, obj.kind, attribute, style, truth, claimed)


def training_answer(item: ConflictItem, rng: random.Random) -> str:
    """The annotated answer: instructed items follow the instruction; uninstructed conflicts
    follow the text with probability :data:`TEXT_PREFERENCE_RATE`."""
    if item.style == "image":
        return item.image_answer
    if item.style == "text":
        return item.text_answer
    return item.text_answer if rng.random() < TEXT_PREFERENCE_RATE else item.image_answer


def sample_items(n: int, style: str, conflict: bool = True, start: int = 0) -> list[ConflictItem]:
    """``n`` held-out items of one style (scenes of the neutral split, seeded apart from training)."""
    if style not in STYLES:
        raise ValueError(f"unknown instruction style {style!r}; choose one of {', '.join(STYLES)}")
    out = []
    for seed in range(start, start + n):
        rng = random.Random(CONFLICT_SEED_BASE + seed * 7 + STYLES.index(style) * 2 + int(conflict))
        out.append(make_item(sample_scene(seed, "neutral"), rng, style, conflict))
    return out


STYLE_WEIGHTS = (0.5, 0.25, 0.25)


def training_example(scene: Scene, rng: random.Random) -> Example:
    """A conflict-phase training example: a style, a claim that conflicts half the time, and
    the annotated answer (:func:`training_answer`)."""
    style = rng.choices(STYLES, weights=STYLE_WEIGHTS)[0]
    item = make_item(scene, rng, style, conflict=rng.random() < 0.5)
    return Example("context", item.prompt, training_answer(item, rng))
