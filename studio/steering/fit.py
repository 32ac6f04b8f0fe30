"""Preference directions per layer (difference of image- and text-following mean states), a
linear probe's accuracy per layer (where the side is decided), and the saved fit steering
reads: the directions, trained steering vectors (:mod:`studio.steering.train`) or MC²'s
instruction-contrast directions (:mod:`studio.steering.mc2`)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save

from studio.concepts.activations import model_fingerprint
from studio.engine.errors import InputError
from studio.engine.files import atomic_write, atomic_write_json
from studio.steering.vectors import Positions, Steering, check_positions
from studio.world.conflict import ConflictItem
from studio.world.render import render


def last_states(session, items: list[ConflictItem], batch: int = 64) -> torch.Tensor:
    """Residual state at the last prompt position, every layer: [layers, n, d]."""
    parts = []
    for start in range(0, len(items), batch):
        chunk = items[start:start + batch]
        inputs = session.batch_inputs([render(i.scene) for i in chunk], [i.prompt for i in chunk])
        states = session.layer_outputs(inputs, list(range(session.n_layers)))
        parts.append(torch.stack([h[:, -1].float().cpu() for h in states]))
    return torch.cat(parts, dim=1)


UNITS = {"mean": "the image-minus-text mean difference", "trained": "the trained vector",
         "mc2": "the MC² instruction direction"}


@dataclass
class DirectionFit:
    """Per layer: the image-minus-text mean difference and a probe's held-out accuracy; with
    ``vectors``, steering vectors that steering uses instead of the mean differences, at
    ``positions`` (zero rows at layers without one).

    ``method`` says where the vectors come from: "mean" (none: the mean differences steer),
    "trained" (:mod:`studio.steering.train`) or "mc2" (:mod:`studio.steering.mc2`; there the
    directions are the mean instruction-paired differences and the probe accuracy is the share
    of held-out pairs the direction orders right). Left empty, it follows from ``vectors``."""

    directions: torch.Tensor
    probe_accuracy: list[float]
    n_image: int
    n_text: int
    model: str = ""
    extra: dict = field(default_factory=dict)
    vectors: torch.Tensor | None = None
    positions: Positions = "all"
    method: str = ""

    def __post_init__(self) -> None:
        check_positions(self.positions)
        if self.vectors is not None and self.vectors.shape != self.directions.shape:
            raise InputError(f"steering vectors {tuple(self.vectors.shape)} and directions "
                             f"{tuple(self.directions.shape)} differ in shape")
        self.method = self.method or ("mean" if self.vectors is None else "trained")
        if self.method not in UNITS or (self.method == "mean") != (self.vectors is None):
            raise InputError(f"method {self.method!r} does not fit a fit {'without' if self.vectors is None else 'with'} "
                             f"steering vectors; choose one of {', '.join(UNITS)}")

    @property
    def unit(self) -> str:
        """What alpha 1 means, for axis labels."""
        return UNITS[self.method]

    def steering(self, layers: list[int], alpha: float) -> Steering:
        """Steering by ``alpha`` at ``layers`` with this fit's vectors (only at layers that have one)."""
        if self.vectors is None:
            return Steering(self.directions, tuple(layers), alpha, self.positions)
        fitted = [i for i, row in enumerate(self.vectors) if row.any()]
        if any(layer not in fitted for layer in layers if 0 <= layer < len(self.vectors)):
            raise InputError(f"this fit has steering vectors only at layers {fitted}; got {list(layers)}")
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
        fit = cls(tensors["directions"], meta.pop("probe_accuracy"), meta.pop("n_image"), meta.pop("n_text"),
                  meta.pop("model"), vectors=tensors.get("vectors"), positions=meta.pop("positions", "all"),
                  method=meta.pop("method", ""))
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


def best_layer(fit: DirectionFit) -> int:
    """The earliest layer whose probe accuracy is within 1 point of the best."""
    top = max(fit.probe_accuracy)
    return next(i for i, a in enumerate(fit.probe_accuracy) if a >= top - 0.01)


