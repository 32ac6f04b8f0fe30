"""Modality preference: measure it on conflict items, find its direction per layer, steer it.

Following MC² (Zhang et al. 2025, "Evaluating and Steering Modality Preferences in Multimodal
Large Language Models"): the preference is read from which side of a conflict the answer
follows; a direction is the difference of mean residual states (last prompt position) between
image-following and text-following cases; steering adds ``alpha * direction`` to the chosen
decoder layers' outputs at every position and step (an nnsight trace,
:mod:`studio.interventions`). ``alpha`` is in units of that mean difference: alpha 1 moves a
text-following state by the whole gap, on average.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save

from studio.concepts.activations import model_fingerprint
from studio.errors import InputError
from studio.files import atomic_write, atomic_write_json
from studio.interventions import Edit, answer_with_edits
from studio.world.conflict import STYLES, ConflictItem, sample_items
from studio.world.render import render

MAX_ALPHA = 20.0


def check_alpha(alpha: float) -> float:
    if not (isinstance(alpha, (int, float)) and abs(alpha) <= MAX_ALPHA):
        raise InputError(f"alpha must be between -{MAX_ALPHA} and {MAX_ALPHA}; got {alpha}")
    return float(alpha)


def steering_edits(directions: torch.Tensor, layers: list[int], alpha: float) -> dict[int, Edit]:
    """Edits adding ``alpha * directions[layer]`` at each of ``layers``."""
    alpha = check_alpha(alpha)
    if not layers:
        raise InputError("choose at least one layer to steer")
    for layer in layers:
        if not 0 <= layer < len(directions):
            raise InputError(f"layer {layer} is out of range: choose 0..{len(directions) - 1}")

    def add(vector: torch.Tensor) -> Edit:
        return lambda h: h + (alpha * vector).to(device=h.device, dtype=h.dtype)
    return {layer: add(directions[layer]) for layer in layers}


def answer_items(session, items: list[ConflictItem], edits: dict[int, Edit] | None = None,
                 batch: int = 64, max_new_tokens: int = 2) -> list[str]:
    """Each item's answer, greedy, optionally with steering edits."""
    out = []
    for start in range(0, len(items), batch):
        chunk = items[start:start + batch]
        images, prompts = [render(i.scene) for i in chunk], [i.prompt for i in chunk]
        if edits:
            out += answer_with_edits(session, images, prompts, max_new_tokens, edits)
        else:
            out += session.answer_batch(images, prompts, max_new_tokens)
    return out


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


def preference(items: list[ConflictItem], answers: list[str]) -> dict[str, Preference]:
    """Per instruction style and overall ("all")."""
    counts: dict[str, Counter] = {}
    for item, answer in zip(items, answers):
        side = item.follows(answer)
        for key in (item.style, "all"):
            counts.setdefault(key, Counter())[side] += 1
    return {k: Preference(c["image"], c["text"], c["other"]) for k, c in counts.items()}


def last_states(session, items: list[ConflictItem], batch: int = 64) -> torch.Tensor:
    """Residual state at the last prompt position, every layer: [layers, n, d]."""
    parts = []
    for start in range(0, len(items), batch):
        chunk = items[start:start + batch]
        inputs = session.batch_inputs([render(i.scene) for i in chunk], [i.prompt for i in chunk])
        states = session.layer_outputs(inputs, list(range(session.n_layers)))
        parts.append(torch.stack([h[:, -1].float().cpu() for h in states]))
    return torch.cat(parts, dim=1)


@dataclass
class DirectionFit:
    """Per layer: the image-minus-text mean difference and a linear probe's held-out accuracy."""

    directions: torch.Tensor
    probe_accuracy: list[float]
    n_image: int
    n_text: int
    model: str = ""
    extra: dict = field(default_factory=dict)

    def save(self, folder: str | Path) -> None:
        """``preference.safetensors`` (directions) and ``preference.json``, each written atomically."""
        out = Path(folder)
        atomic_write(out / "preference.safetensors", save({"directions": self.directions.contiguous()}))
        atomic_write_json(out / "preference.json", {"probe_accuracy": self.probe_accuracy, "n_image": self.n_image,
                                                    "n_text": self.n_text, "model": self.model, **self.extra})

    @classmethod
    def load(cls, folder: str | Path, session=None) -> "DirectionFit":
        """Read a saved fit; with ``session``, refuse one made for another model or width."""
        path = Path(folder)
        if not (path / "preference.safetensors").is_file():
            raise InputError(f"{path} holds no preference direction (preference.safetensors)")
        meta = json.loads((path / "preference.json").read_text())
        directions = load_file(str(path / "preference.safetensors"))["directions"]
        fit = cls(directions, meta.pop("probe_accuracy"), meta.pop("n_image"), meta.pop("n_text"),
                  meta.pop("model"), meta)
        if session is not None:
            check_directions(fit, session)
        return fit


def check_directions(fit: DirectionFit, session) -> None:
    hidden = session.adapter.final_norm().weight.shape[0]
    if fit.directions.shape != (session.n_layers, hidden):
        raise InputError(f"the direction file holds {tuple(fit.directions.shape)} (layers, width); "
                         f"this model needs ({session.n_layers}, {hidden})")
    if fit.model and fit.model != model_fingerprint(session.model):
        raise InputError("the direction file was fitted on another model")


def fit_directions(session, items: list[ConflictItem], answers: list[str], seed: int = 0) -> DirectionFit:
    """Directions and probe accuracies from items labelled by the side their answer followed.

    The probe (logistic regression) is trained on half the scenes and scored on the other half.
    """
    from sklearn.linear_model import LogisticRegression
    sides = [item.follows(a) for item, a in zip(items, answers)]
    keep = [i for i, s in enumerate(sides) if s in ("image", "text")]
    labels = np.array([sides[i] == "image" for i in keep])
    if labels.all() or not labels.any():
        raise InputError("every answer followed the same side: no preference direction can be fitted")
    states = last_states(session, [items[i] for i in keep])
    directions = torch.stack([s[labels].mean(0) - s[~labels].mean(0) for s in states])
    rng = np.random.default_rng(seed)
    scenes = sorted({items[i].scene.seed for i in keep})
    held = set(rng.permutation(scenes)[: len(scenes) // 2].tolist())
    test = np.array([items[i].scene.seed in held for i in keep])
    accuracy = []
    for s in states.numpy():
        probe = LogisticRegression(max_iter=2000).fit(s[~test], labels[~test])
        accuracy.append(float(probe.score(s[test], labels[test])))
    return DirectionFit(directions, accuracy, int(labels.sum()), int((~labels).sum()), model_fingerprint(session.model))


@dataclass
class Sweep:
    """Preference on conflict items (per style) and accuracy on matched items, per alpha."""

    layers: list[int]
    alphas: list[float]
    conflict: list[dict]
    matched_accuracy: list[float]

    def image_ratio(self, style: str = "neutral") -> list[float]:
        return [c[style]["image_ratio"] for c in self.conflict]

    def to_dict(self) -> dict:
        return asdict(self)


def sweep(session, fit: DirectionFit, layers: list[int], alphas: list[float],
          conflict: list[ConflictItem], matched: list[ConflictItem], progress: bool = True) -> Sweep:
    """Answer the same items at every alpha (0 included means unsteered generation)."""
    from tqdm.auto import tqdm
    rows, accuracy = [], []
    for alpha in tqdm(alphas, desc="steering sweep", disable=not progress):
        edits = steering_edits(fit.directions, layers, alpha) if alpha else None
        answers = answer_items(session, conflict + matched, edits)
        rows.append({k: p.to_dict() for k, p in preference(conflict, answers[:len(conflict)]).items()})
        accuracy.append(float(np.mean([i.follows(a) == "image" for i, a in zip(matched, answers[len(conflict):])])))
    return Sweep(layers, [float(a) for a in alphas], rows, accuracy)


DIRECTION_ITEMS_START = 100_000
TARGET_IMAGE_RATIO = 0.8


def direction_items(n: int) -> list[ConflictItem]:
    """Conflict items of every style for fitting directions, on scenes apart from the held-out ones."""
    return [item for style in STYLES for item in sample_items(n, style, start=DIRECTION_ITEMS_START)]


def held_out_items(n: int) -> tuple[list[ConflictItem], list[ConflictItem]]:
    """(conflict items of every style, matched neutral items) for measuring and sweeping."""
    conflict = [item for style in STYLES for item in sample_items(n, style)]
    return conflict, sample_items(n, "neutral", conflict=False)


def best_layer(fit: DirectionFit) -> int:
    """The earliest layer whose probe accuracy is within 1 point of the best."""
    top = max(fit.probe_accuracy)
    return next(i for i, a in enumerate(fit.probe_accuracy) if a >= top - 0.01)


def chosen_alpha(result: Sweep, style: str = "neutral", max_accuracy_drop: float = 0.05) -> float | None:
    """The positive alpha to score on the bias split: the smallest one reaching the target image
    ratio, else the one with the highest ratio, among alphas whose matched accuracy stays within
    ``max_accuracy_drop`` of alpha 0's (None when no positive alpha qualifies)."""
    base = result.matched_accuracy[result.alphas.index(0.0)] if 0.0 in result.alphas else max(result.matched_accuracy)
    ok = [(a, r) for a, r, acc in zip(result.alphas, result.image_ratio(style), result.matched_accuracy)
          if a > 0 and acc >= base - max_accuracy_drop]
    if not ok:
        return None
    hits = [a for a, r in ok if r >= TARGET_IMAGE_RATIO]
    return min(hits) if hits else max(ok, key=lambda x: x[1])[0]
