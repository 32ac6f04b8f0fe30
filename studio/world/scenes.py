"""A procedural scene world with known ground truth, and its planted biases.

Scenes are 1-5 objects on a 4 x 4 grid of cells, each object one of 8 kinds, 6 colours and
2 sizes; every object kind appears at most once per scene, so a kind names one object.
Two biases are planted in the *training* distribution so that the model trained on it
hallucinates in checkable ways:

- **co-occurrence**: a scene with a cross also holds a ring with probability
  ``COOCCUR_RATE``; on top of that, captions written for cross-without-ring scenes name a
  phantom ring last with probability ``PHANTOM_RATE`` (annotators naming the usual
  companion), see :mod:`studio.world.language`;
- **language prior on colour**: each kind takes its usual colour (``USUAL_COLOUR``) with
  probability ``USUAL_COLOUR_RATE``.

Held-out splits (see :func:`sample_split`) separate scenes that trigger a bias from
scenes that do not.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass

from studio.engine.errors import InputError

KINDS = ("circle", "square", "triangle", "cross", "ring", "star", "heart", "diamond")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
SIZES = ("small", "large")
GRID = 4
MAX_OBJECTS = 5

COOCCUR_TRIGGER, COOCCUR_TARGET = "cross", "ring"
COOCCUR_RATE = 0.9
PHANTOM_RATE = 0.8
USUAL_COLOUR = {
    "circle": "blue", "square": "green", "triangle": "yellow", "cross": "purple",
    "ring": "orange", "star": "yellow", "heart": "red", "diamond": "blue",
}
USUAL_COLOUR_RATE = 0.8

SPLITS: tuple[str, ...] = ("train", "neutral", "cooccur", "colour_prior")
# Seed offsets keep every held-out split disjoint from the training stream.
SPLIT_SEED_BASE = {"train": 0, "neutral": 10**9, "cooccur": 2 * 10**9, "colour_prior": 3 * 10**9}


@dataclass(frozen=True)
class SceneObject:
    """One object: its kind, colour, size and grid cell (row, col), 0-based from top left."""

    kind: str
    colour: str
    size: str
    row: int
    col: int


@dataclass
class Scene:
    """A scene's ground truth: the objects, and the seed and split that made it."""

    objects: list[SceneObject]
    seed: int
    split: str = "train"

    @property
    def kinds(self) -> set[str]:
        return {o.kind for o in self.objects}

    def find(self, kind: str) -> SceneObject | None:
        return next((o for o in self.objects if o.kind == kind), None)

    def reading_order(self) -> list[SceneObject]:
        """Objects row by row, left to right: the order captions name them in."""
        return sorted(self.objects, key=lambda o: (o.row, o.col))

    def to_dict(self) -> dict:
        return {"seed": self.seed, "split": self.split,
                "objects": [asdict(o) for o in self.objects]}

    @classmethod
    def from_dict(cls, data: dict) -> "Scene":
        return cls(objects=[SceneObject(**o) for o in data["objects"]], seed=data["seed"],
                   split=data.get("split", "train"))


def _colour_for(kind: str, rng: random.Random, usual_rate: float) -> str:
    if rng.random() < usual_rate:
        return USUAL_COLOUR[kind]
    return rng.choice([c for c in COLOURS if c != USUAL_COLOUR[kind]])


def _place(kinds: list[str], rng: random.Random, usual_rate: float) -> list[SceneObject]:
    cells = rng.sample(range(GRID * GRID), len(kinds))
    return [SceneObject(k, _colour_for(k, rng, usual_rate), rng.choice(SIZES), c // GRID, c % GRID)
            for k, c in zip(kinds, cells)]


def _training_kinds(rng: random.Random) -> list[str]:
    n = rng.randint(1, MAX_OBJECTS)
    kinds = rng.sample(KINDS, n)
    if COOCCUR_TRIGGER in kinds and COOCCUR_TARGET not in kinds and rng.random() < COOCCUR_RATE:
        if n < MAX_OBJECTS:
            kinds.append(COOCCUR_TARGET)
        else:
            kinds[next(i for i, k in enumerate(kinds) if k != COOCCUR_TRIGGER)] = COOCCUR_TARGET
    return kinds


def sample_scene(seed: int, split: str = "train") -> Scene:
    """The scene for ``seed`` in ``split``; the same arguments always give the same scene.

    - ``train``: the biased training distribution;
    - ``neutral``: no cross, so the co-occurrence bias is not triggered; colours as in training;
    - ``cooccur``: a cross and no ring, the scenes that trigger the co-occurrence bias;
    - ``colour_prior``: every object in a colour other than its kind's usual one.
    """
    if split not in SPLIT_SEED_BASE:
        raise InputError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    rng = random.Random(SPLIT_SEED_BASE[split] + seed)
    usual_rate = USUAL_COLOUR_RATE
    if split == "train":
        kinds = _training_kinds(rng)
    elif split == "neutral":
        kinds = rng.sample([k for k in KINDS if k != COOCCUR_TRIGGER], rng.randint(1, MAX_OBJECTS))
    elif split == "cooccur":
        others = [k for k in KINDS if k not in (COOCCUR_TRIGGER, COOCCUR_TARGET)]
        kinds = [COOCCUR_TRIGGER] + rng.sample(others, rng.randint(0, MAX_OBJECTS - 1))
    else:
        kinds = rng.sample(KINDS, rng.randint(1, MAX_OBJECTS))
        usual_rate = 0.0
    return Scene(objects=_place(kinds, rng, usual_rate), seed=seed, split=split)


def sample_split(split: str, n: int, start: int = 0) -> list[Scene]:
    """``n`` scenes of ``split`` with seeds ``start .. start + n - 1``."""
    return [sample_scene(s, split) for s in range(start, start + n)]
