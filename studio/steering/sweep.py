"""The steering sweep: the same held-out items answered at every alpha, and the alpha chosen
(on the validation split; :mod:`studio.steering.split` reports it on another)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from studio.steering.fit import DirectionFit
from studio.steering.preference import answer_items, image_answerable, preference
from studio.world.conflict import ConflictItem

TARGET_IMAGE_RATIO = 0.8
TARGET_STYLE = "neutral answerable"


@dataclass
class Sweep:
    """Preference on conflict items (per style) and accuracy on matched items, per alpha."""

    layers: list[int]
    alphas: list[float]
    conflict: list[dict]
    matched_accuracy: list[float]
    unit: str = "the image-minus-text mean difference"

    def image_ratio(self, style: str = "neutral") -> list[float]:
        """Per alpha, the share of ``style``'s conflict answers following the image (a style key
        of :func:`preference`, e.g. "neutral" or "neutral answerable")."""
        return [c[style]["image_ratio"] for c in self.conflict]

    def to_dict(self) -> dict:
        return asdict(self)


def sweep(session, fit: DirectionFit, layers: list[int], alphas: list[float],
          conflict: list[ConflictItem], matched: list[ConflictItem], progress: bool = True) -> Sweep:
    """Answer the same items at every alpha (0 included means unsteered generation)."""
    from tqdm.auto import tqdm
    rows, accuracy = [], []
    answerable = image_answerable(session, conflict)
    for alpha in tqdm(alphas, desc="steering sweep", disable=not progress):
        answers = answer_items(session, conflict + matched, fit.steering(layers, alpha))
        counts = preference(conflict, answers[:len(conflict)], answerable)
        rows.append({k: p.to_dict() for k, p in counts.items()})
        accuracy.append(float(np.mean([i.follows(a) == "image" for i, a in zip(matched, answers[len(conflict):])])))
    return Sweep(layers, [float(a) for a in alphas], rows, accuracy, fit.unit)


def chosen_alpha(result: Sweep, style: str = TARGET_STYLE, max_accuracy_drop: float = 0.05) -> float | None:
    """The positive alpha to report (give it a validation sweep, report it elsewhere): the
    smallest one reaching the target image ratio on ``style`` (default: uninstructed conflicts
    the model can see), else the one with the highest ratio, among alphas whose matched
    accuracy stays within ``max_accuracy_drop`` of alpha 0's (None when no positive alpha qualifies)."""
    base = result.matched_accuracy[result.alphas.index(0.0)] if 0.0 in result.alphas else max(result.matched_accuracy)
    ok = [(a, r) for a, r, acc in zip(result.alphas, result.image_ratio(style), result.matched_accuracy)
          if a > 0 and acc >= base - max_accuracy_drop]
    if not ok:
        return None
    hits = [a for a, r in ok if r >= TARGET_IMAGE_RATIO]
    return min(hits) if hits else max(ok, key=lambda x: x[1])[0]
