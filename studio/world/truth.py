"""Judge generated words against a scene's ground truth, word by word.

For captions, each comma-separated mention ``a <size> <colour> <kind>`` is checked: a kind
that is not in the scene marks the whole mention wrong (a hallucinated object); a present
kind with the wrong colour or size marks just that word. For world questions the answer is
compared with the ground-truth answer. Words the world's language does not judge get None.
"""
from __future__ import annotations

import re

from studio.world.language import NUMBERS, kind_of, where_answer
from studio.world.scenes import COLOURS, SIZES, Scene

_EXIST = re.compile(r"^is there an? (\w+) \?$")
_ATTR = re.compile(r"^what (color|size) is the (\w+) \?$")
_WHERE = re.compile(r"^where is the (\w+) \?$")
_COUNT = "how many objects are there ?"


def _normalise(prompt: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"([?.,])", r" \1 ", prompt.lower())).strip()


def expected_answer(scene: Scene, prompt: str) -> str | None:
    """The ground-truth answer to a world question, or None for prompts that are not one."""
    p = _normalise(prompt)
    if m := _EXIST.match(p):
        return "yes" if m.group(1) in scene.kinds else "no"
    if p == _COUNT:
        return NUMBERS[len(scene.objects)] if len(scene.objects) < len(NUMBERS) else None
    if m := _ATTR.match(p):
        obj = scene.find(m.group(2))
        return None if obj is None else (obj.colour if m.group(1) == "color" else obj.size)
    if m := _WHERE.match(p):
        obj = scene.find(m.group(1))
        return None if obj is None else where_answer(obj)
    return None


def judge_words(scene: Scene, prompt: str, words: list[str]) -> list[bool | None]:
    """Per generated word: True if wrong against ground truth, False if right, None if not judged."""
    clean = [w.strip().lower() for w in words]
    expected = expected_answer(scene, prompt)
    if expected is not None:
        wrong = " ".join(w for w in clean if w) != expected
        return [wrong if w else None for w in clean]
    return _judge_caption(scene, clean)


def _judge_caption(scene: Scene, words: list[str]) -> list[bool | None]:
    verdict: list[bool | None] = [None] * len(words)
    group: list[int] = []
    for i, w in enumerate(words + [","]):
        if w in (",", ".", "") and group:
            _judge_mention(scene, words, group, verdict)
            group = []
        elif w not in (",", ".", ""):
            group.append(i)
    return verdict


def _judge_mention(scene: Scene, words: list[str], group: list[int], verdict: list[bool | None]) -> None:
    kind_at = next((i for i in group if kind_of(words[i])), None)
    if kind_at is None:
        return
    kind = kind_of(words[kind_at])
    assert kind is not None
    obj = scene.find(kind)
    for i in group:
        w = words[i]
        if obj is None:
            verdict[i] = w in COLOURS or w in SIZES or i == kind_at
        elif w in COLOURS:
            verdict[i] = w != obj.colour
        elif w in SIZES:
            verdict[i] = w != obj.size
        elif i == kind_at:
            verdict[i] = False
