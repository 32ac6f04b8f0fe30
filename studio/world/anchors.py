"""The scene world's text-to-image model for generative anchors (:mod:`studio.decoding.anchors`).

In the world the renderer is exact: a caption is parsed into the objects it names (``a <size>
<colour> <kind>`` phrases, in reading order) and those objects are drawn with
:func:`studio.world.render.render`. A caption says nothing of where objects are, so the
scene the caption describes places them on grid cells drawn from a hash of the caption and
sorted into reading order (rendering it and captioning the result gives the caption back);
the background grain is seeded the same way. Phrases that do not parse are not drawn, as a
text-to-image model draws only what it understands. The real image is not looked at.

:func:`register` adds this renderer for sessions whose object vocabulary is the world's
(the embedded model's ``objects.json``); the CLI and the app call it at start.

:func:`truth_anchor_check` is the paper's side-effect check in the world: the anchor rendered
from a hallucination-free caption (the ground truth's) should change almost nothing.
"""
from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

from PIL import Image

from studio.world.evaluate import chair_counts
from studio.world.language import CAPTION_PROMPT, caption
from studio.world.render import render
from studio.world.scenes import COLOURS, GRID, KINDS, SIZES, Scene, SceneObject, sample_scene


def parse_caption(caption: str) -> list[tuple[str, str, str]]:
    """The ``(kind, colour, size)`` of every ``a <size> <colour> <kind>`` phrase, in order."""
    objects = []
    for phrase in caption.replace(".", ",").split(","):
        words = phrase.split()
        if len(words) == 4 and words[0] == "a" and words[1] in SIZES and words[2] in COLOURS and words[3] in KINDS:
            objects.append((words[3], words[2], words[1]))
    return objects[:GRID * GRID]


def scene_for_caption(caption: str) -> Scene:
    """The scene ``caption`` describes: its objects in reading order on cells drawn from its hash."""
    objects = parse_caption(caption)
    seed = zlib.crc32(caption.encode())
    cells = sorted(random.Random(seed).sample(range(GRID * GRID), len(objects)))
    return Scene([SceneObject(kind, colour, size, cell // GRID, cell % GRID)
                  for (kind, colour, size), cell in zip(objects, cells)], seed=seed, split="anchor")


def render_caption(image: Image.Image, caption: str) -> Image.Image:
    """The anchor image for ``caption`` (``image``, the real one, is not used)."""
    return render(scene_for_caption(caption))


def speaks_world(session) -> bool:
    """Whether the session's model names the world's objects (its vocabulary is the world's)."""
    return set(KINDS) <= set(getattr(session, "objects", ()))


def register() -> None:
    """Register the world renderer as the anchors' text-to-image model for world models."""
    from studio.decoding.anchors import register_text_to_image
    register_text_to_image("world", render_caption, speaks_world)


@dataclass
class TruthCheck:
    """Anchored captions against greedy when the anchor renders the ground-truth caption: the share
    of captions unchanged, CHAIR_i and recall, with paired-bootstrap 95% intervals over scenes."""

    split: str
    n_scenes: int
    unchanged: float
    unchanged_ci: list[float]
    metrics: dict[str, float]
    diff_to_greedy: dict[str, float]
    diff_ci: dict[str, list[float]]
    params: dict


def _counts(scene: Scene, text: str, unchanged: bool) -> dict[str, float]:
    hallucinated, mentions, recalled = chair_counts(scene, text)
    return {"unchanged": float(unchanged), "captions": 1.0, "halluc": hallucinated, "mentions": mentions,
            "recalled": recalled, "objects": len(scene.kinds)}


def _metrics(total: dict[str, float]) -> dict[str, float]:
    return {"unchanged": total["unchanged"] / total["captions"], "chair_i": total["halluc"] / max(1, total["mentions"]),
            "recall": total["recalled"] / max(1, total["objects"])}


def truth_anchor_check(session, n_scenes: int = 100, split: str = "neutral", seed: int = 0, batch: int = 32,
                       **params) -> TruthCheck:
    """Caption ``n_scenes`` of ``split`` (the scenes ``world eval`` uses for ``seed``) greedily and
    with anchors whose negative anchor renders each scene's ground-truth caption instead of the
    model's own (``params``: the anchors strategy's)."""
    from studio.benchmarks.intervals import paired_bootstrap
    from studio.decoding import Greedy, strategy_by_name
    from studio.decoding.anchors import register_text_to_image
    scenes = [sample_scene(seed * 100_000 + i, split) for i in range(n_scenes)]
    images = [render(s) for s in scenes]
    truth = {image.tobytes(): caption(scene) for image, scene in zip(images, scenes)}
    register_text_to_image("world-truth", lambda image, text: render_caption(image, truth[image.tobytes()]),
                           lambda s: False)
    anchored = strategy_by_name("anchors", renderer="world-truth", **params)
    texts: dict[str, list[str]] = {"greedy": [], "anchors": []}
    for start in range(0, n_scenes, batch):
        chunk = images[start:start + batch]
        for name, strategy in (("greedy", Greedy()), ("anchors", anchored)):
            texts[name] += session.answer_batch(chunk, [CAPTION_PROMPT] * len(chunk), 40, strategy)
    pairs = list(zip(scenes, texts["greedy"], texts["anchors"]))
    interval = paired_bootstrap([_counts(s, a, a == g) for s, g, a in pairs], [_counts(s, g, True) for s, g, _ in pairs],
                                _metrics, seed=seed)
    return TruthCheck(split, n_scenes, interval.metrics["unchanged"], interval.ci["unchanged"], interval.metrics,
                      interval.diff_to_greedy, interval.diff_ci, params)
