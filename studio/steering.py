"""Modality preference: measure it on conflict items, find its direction per layer, steer it.

Following MC² (Zhang et al. 2025, "Evaluating and Steering Modality Preferences in Multimodal
Large Language Models"): the preference is read from which side of a conflict the answer
follows; a direction is the difference of mean residual states (last prompt position) between
image-following and text-following cases, and a linear probe's held-out accuracy per layer says
where the side is decided. Steering adds ``alpha * vector`` to the chosen decoder layers'
outputs (an nnsight trace, :mod:`studio.interventions`) at every position and generated step,
at the text positions (after the image, and every generated step), or at the prompt's text
positions only (:class:`Steering`).

The vector is either the mean difference itself (``alpha`` in units of that gap) or one
trained for the job (:mod:`studio.steering_train`; ``alpha`` 1 is the trained vector).
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors.torch import load_file, save

from studio.concepts.activations import model_fingerprint
from studio.errors import InputError
from studio.files import atomic_write, atomic_write_json
from studio.interventions import Edit, generate_with_edits
from studio.world.conflict import STYLES, ConflictItem, sample_items
from studio.world.render import render

Positions = Literal["all", "text", "prompt"]
POSITIONS: tuple[str, ...] = ("all", "text", "prompt")
MAX_ALPHA = 20.0


def check_alpha(alpha: float) -> float:
    if not (isinstance(alpha, (int, float)) and abs(alpha) <= MAX_ALPHA):
        raise InputError(f"alpha must be between -{MAX_ALPHA} and {MAX_ALPHA}; got {alpha}")
    return float(alpha)


def check_positions(positions: str) -> str:
    if positions not in POSITIONS:
        raise InputError(f"positions must be one of {', '.join(POSITIONS)}; got {positions!r}")
    return positions


def text_mask(session, input_ids: torch.Tensor) -> torch.Tensor:
    """[batch, seq] True at the positions after each row's last image token (every position of
    a row without an image); left padding sits before the image, so it is never marked."""
    index = torch.arange(input_ids.shape[1], device=input_ids.device)
    is_image = input_ids == session.adapter.image_token_id()
    last = torch.where(is_image, index, torch.full_like(input_ids, -1)).max(dim=1).values
    return index[None] > last[:, None]


def steering_edits(directions: torch.Tensor, layers: list[int], alpha: float,
                   mask: torch.Tensor | None = None, generated: bool = True) -> dict[int, Edit]:
    """Edits adding ``alpha * directions[layer]`` at each of ``layers``; with ``mask``
    ([batch, prompt length]), only at its marked prompt positions, and at every generated step
    unless ``generated`` is False."""
    alpha = check_alpha(alpha)
    if not layers:
        raise InputError("choose at least one layer to steer")
    for layer in layers:
        if not 0 <= layer < len(directions):
            raise InputError(f"layer {layer} is out of range: choose 0..{len(directions) - 1}")

    def add(vector: torch.Tensor) -> Edit:
        def edit(h: torch.Tensor) -> torch.Tensor:
            shift = (alpha * vector).to(device=h.device, dtype=h.dtype)
            if mask is None:
                return h + shift
            if h.shape[1] != mask.shape[1]:
                return h + shift if generated else h
            return h + mask[..., None].to(device=h.device, dtype=h.dtype) * shift
        return edit
    return {layer: add(directions[layer]) for layer in layers}


@dataclass(frozen=True)
class Steering:
    """One steering setting: ``alpha`` × ``vectors[layer]`` added at each of ``layers``, at
    ``positions``: "all" (every position and generated step), "text" (the prompt after the
    image, and every generated step) or "prompt" (the prompt after the image only; generated
    tokens see the steered prompt through the cache)."""

    vectors: torch.Tensor
    layers: tuple[int, ...]
    alpha: float
    positions: Positions = "all"

    def __post_init__(self) -> None:
        check_alpha(self.alpha)
        check_positions(self.positions)

    def edits(self, session, input_ids: torch.Tensor) -> dict[int, Edit]:
        """The edits for one batch of prompts (the text mask depends on where their image is)."""
        mask = None if self.positions == "all" else text_mask(session, input_ids)
        return steering_edits(self.vectors, list(self.layers), self.alpha, mask, self.positions != "prompt")


def steered_answers(session, images: list, prompts: list[str], max_new_tokens: int,
                    steering: Steering) -> list[str]:
    """Greedy answers for many (image, prompt) pairs generated together under ``steering``."""
    inputs = session.batch_inputs(images, prompts)
    rows = generate_with_edits(session, inputs, steering.edits(session, inputs["input_ids"]), max_new_tokens)
    return [session.decode_answer(r) for r in rows]


def answer_items(session, items: list[ConflictItem], steering: Steering | None = None,
                 batch: int = 64, max_new_tokens: int = 2) -> list[str]:
    """Each item's answer, greedy, optionally steered (alpha 0 runs the plain model)."""
    out = []
    for start in range(0, len(items), batch):
        chunk = items[start:start + batch]
        images, prompts = [render(i.scene) for i in chunk], [i.prompt for i in chunk]
        if steering is not None and steering.alpha:
            out += steered_answers(session, images, prompts, max_new_tokens, steering)
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
    answers = []
    for start in range(0, len(items), batch):
        chunk = items[start:start + batch]
        answers += session.answer_batch([render(i.scene) for i in chunk], [i.question for i in chunk], 2)
    return [i.follows(a) == "image" for i, a in zip(items, answers)]


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
    """Per layer: the image-minus-text mean difference and a linear probe's held-out accuracy;
    with ``vectors``, trained steering vectors (zero rows at layers not trained) that steering
    uses instead of the mean differences, at ``positions``."""

    directions: torch.Tensor
    probe_accuracy: list[float]
    n_image: int
    n_text: int
    model: str = ""
    extra: dict = field(default_factory=dict)
    vectors: torch.Tensor | None = None
    positions: Positions = "all"

    def __post_init__(self) -> None:
        check_positions(self.positions)
        if self.vectors is not None and self.vectors.shape != self.directions.shape:
            raise InputError(f"steering vectors {tuple(self.vectors.shape)} and directions "
                             f"{tuple(self.directions.shape)} differ in shape")

    @property
    def method(self) -> str:
        return "mean" if self.vectors is None else "trained"

    @property
    def unit(self) -> str:
        """What alpha 1 means, for axis labels."""
        return "the image-minus-text mean difference" if self.vectors is None else "the trained vector"

    def steering(self, layers: list[int], alpha: float) -> Steering:
        """Steering by ``alpha`` at ``layers`` with this fit's vectors (a trained fit only at its trained layers)."""
        if self.vectors is None:
            return Steering(self.directions, tuple(layers), alpha, self.positions)
        trained = [i for i, row in enumerate(self.vectors) if row.any()]
        if any(layer not in trained for layer in layers if 0 <= layer < len(self.vectors)):
            raise InputError(f"this fit trained steering vectors only at layers {trained}; got {list(layers)}")
        return Steering(self.vectors, tuple(layers), alpha, self.positions)

    def save(self, folder: str | Path) -> None:
        """``preference.safetensors`` (directions, vectors) and ``preference.json``, each written atomically."""
        out = Path(folder)
        tensors = {"directions": self.directions.detach().clone().contiguous()}
        if self.vectors is not None:
            tensors["vectors"] = self.vectors.detach().clone().contiguous()
        atomic_write(out / "preference.safetensors", save(tensors))
        atomic_write_json(out / "preference.json", {"probe_accuracy": self.probe_accuracy, "n_image": self.n_image,
                                                    "n_text": self.n_text, "model": self.model,
                                                    "positions": self.positions, "method": self.method, **self.extra})

    @classmethod
    def load(cls, folder: str | Path, session=None) -> "DirectionFit":
        """Read a saved fit; with ``session``, refuse one made for another model or width."""
        path = Path(folder)
        if not (path / "preference.safetensors").is_file():
            raise InputError(f"{path} holds no preference direction (preference.safetensors)")
        meta = json.loads((path / "preference.json").read_text())
        tensors = load_file(str(path / "preference.safetensors"))
        meta.pop("method", None)
        fit = cls(tensors["directions"], meta.pop("probe_accuracy"), meta.pop("n_image"), meta.pop("n_text"),
                  meta.pop("model"), vectors=tensors.get("vectors"), positions=meta.pop("positions", "all"))
        fit.extra = meta
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


DIRECTION_ITEMS_START = 100_000
TARGET_IMAGE_RATIO = 0.8
TARGET_STYLE = "neutral answerable"


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


def best_layer(fit: DirectionFit) -> int:
    """The earliest layer whose probe accuracy is within 1 point of the best."""
    top = max(fit.probe_accuracy)
    return next(i for i, a in enumerate(fit.probe_accuracy) if a >= top - 0.01)


def chosen_alpha(result: Sweep, style: str = TARGET_STYLE, max_accuracy_drop: float = 0.05) -> float | None:
    """The positive alpha to score on the bias split: the smallest one reaching the target image
    ratio on ``style`` (default: uninstructed conflicts the model can see), else the one with the
    highest ratio, among alphas whose matched accuracy stays within ``max_accuracy_drop`` of
    alpha 0's (None when no positive alpha qualifies)."""
    base = result.matched_accuracy[result.alphas.index(0.0)] if 0.0 in result.alphas else max(result.matched_accuracy)
    ok = [(a, r) for a, r, acc in zip(result.alphas, result.image_ratio(style), result.matched_accuracy)
          if a > 0 and acc >= base - max_accuracy_drop]
    if not ok:
        return None
    hits = [a for a, r in ok if r >= TARGET_IMAGE_RATIO]
    return min(hits) if hits else max(ok, key=lambda x: x[1])[0]
