"""MC²'s steering direction: the first principal component of instruction-paired contrasts.

Following MC² (Zhang et al. 2025, "Evaluating and Steering Modality Preferences in
Multimodal Large Language Models", arXiv 2505.20977; reference code
github.com/EchoDreamer/Modality-Preference). The recipe, and where each part was checked:

- **Pairs.** Each conflict item is asked twice, with the same image, claim and question, once
  under an instruction to follow the image and once under one to follow the text
  (``icc_inference`` in the reference's ``steer_qwen_search_scale.py``, instructions in its
  ``prompt.py``). Here the pairs are the world's own instructions, "answer from the image ."
  and "answer from the text ." (:data:`studio.world.conflict.INSTRUCTIONS`), on uninstructed
  conflict items of the direction-fitting scenes (:data:`~studio.steering.preference.DIRECTION_ITEMS_START`).
- **Position.** The decoder layers' outputs on the prompt, before generation, at the
  assistant role token: the reference keeps the prompt pass's hidden states and ``pca.py``
  reads index -2 of Qwen2.5-VL's prompt, the ``assistant`` token before the template's
  closing newline. This model's template ends at ``<|assistant|>``, so the same token is the
  last prompt position (:func:`studio.steering.fit.last_states`).
- **Direction.** Per layer, the first principal component of the paired differences
  (image-instructed minus text-instructed state), oriented so that the differences project
  positively on it: toward the image. Checked only in part: the released ``pca.py`` projects
  the image- and text-instructed states of each item on their principal components (at layer
  20) and the reviews of the paper speak of a per-layer direction u_l from N samples; the
  code that builds the steering vector lives in the reference's patched transformers, an
  archive its repository snapshot lacks, so the exact formula is the representation-
  engineering reading (PCA of paired differences), not a copy.
- **Layers.** The reference's rebuttal notes (``Rebuttal_Update/README.md``) name layers
  20-23 of Qwen2.5-VL-7B (28 decoder layers, its ``config.json``) as the intervention window,
  the layers where the preference first separates under the logit lens; :func:`layer_window`
  maps that window to another depth proportionally. The numbers are read as 0-based decoder
  layers, as ``pca.py`` indexes them after dropping the embedding output; the notes do not say.
- **Strength.** α × the direction added to the chosen layers' outputs.

Departures, named:

- The PCA is uncentred (the top right-singular vector of the difference matrix). Centring
  would subtract the mean difference, which is the shared preference shift itself; RepE-style
  code avoids that by flipping pair orders at random, which comes to the same direction.
- α is in units of the mean paired difference's projection on the direction (``scale``), so
  α = 1 moves a state as far along the direction as the instruction does on average; the
  direction alone is a unit vector whose natural size depends on the model's width.
- The α is chosen on a validation split and reported on another (:mod:`studio.steering.split`);
  how the paper chooses its strength is not in what we could read.
- The direction is added at every position and generated step (``positions="all"``). The
  reference's steering itself lives in its patched transformers, which its repository ships
  only as an archive we could not read, so where it adds the vector is not verified.
- Every pair is used. MC²'s benchmark keeps only items each modality alone answers right;
  here the paired states are read whatever the model answers.
- The probe accuracy is the share of held-out pairs (other scenes) the direction fitted on
  the rest orders right, not a trained classifier.
- The paper's window was found on a 28-layer model; that the same relative depth is where a
  4-layer model decides is an assumption the measurements (model card) test, not a finding.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from studio.concepts.activations import model_fingerprint
from studio.engine.errors import InputError
from studio.steering.fit import DirectionFit, last_states
from studio.steering.preference import DIRECTION_ITEMS_START
from studio.world.conflict import ConflictItem, sample_items

PAPER_DEPTH = 28
PAPER_WINDOW = (20, 24)  # decoder layers 20..23 of Qwen2.5-VL-7B, end exclusive


def layer_window(n_layers: int) -> list[int]:
    """The paper's window (layers 20-23 of 28) at the same relative depth in a model of
    ``n_layers``: start and end scaled by ``n_layers / 28`` and rounded half up, at least one
    layer. 28 layers give 20-23, 32 give 23-26 and 4 give [3]."""
    if n_layers < 1:
        raise InputError(f"a model needs at least one layer; got {n_layers}")
    start = min(int(PAPER_WINDOW[0] * n_layers / PAPER_DEPTH + 0.5), n_layers - 1)
    stop = min(int(PAPER_WINDOW[1] * n_layers / PAPER_DEPTH + 0.5), n_layers)
    return list(range(start, max(stop, start + 1)))


def instruction_items(n: int) -> list[ConflictItem]:
    """``n`` uninstructed conflict items on the direction-fitting scenes, to be asked under both instructions."""
    return sample_items(n, "neutral", start=DIRECTION_ITEMS_START)


def instructed(items: list[ConflictItem], style: str) -> list[ConflictItem]:
    """The same items (scene, object, claim) under instruction ``style`` ("image" or "text")."""
    return [dataclasses.replace(item, style=style) for item in items]


@dataclass(frozen=True)
class PrincipalDirection:
    """The first principal component of paired differences: ``unit`` (oriented toward the
    image), ``scale`` (the differences' mean projection on it) and ``explained`` (its share of
    the differences' uncentred second moment)."""

    unit: torch.Tensor
    scale: float
    explained: float

    @property
    def vector(self) -> torch.Tensor:
        """``unit`` × ``scale``: what α = 1 adds."""
        return self.unit * self.scale


def principal_direction(differences: torch.Tensor) -> PrincipalDirection:
    """The uncentred first principal component of ``differences`` [n, d] (image minus text),
    its sign chosen so that the differences' mean projection is positive."""
    if differences.ndim != 2 or len(differences) < 1:
        raise InputError(f"expected paired differences [n, d]; got shape {tuple(differences.shape)}")
    data = differences.double()
    _, singular, right = torch.linalg.svd(data, full_matrices=False)
    unit = right[0]
    mean_projection = float((data @ unit).mean())
    if mean_projection < 0:
        unit, mean_projection = -unit, -mean_projection
    energy = float((singular ** 2).sum())
    explained = float(singular[0] ** 2) / energy if energy > 0 else 0.0
    return PrincipalDirection(unit.float(), mean_projection, explained)


def paired_differences(session, items: list[ConflictItem]) -> torch.Tensor:
    """Image-instructed minus text-instructed last-prompt states of the same items: [layers, n, d]."""
    return last_states(session, instructed(items, "image")) - last_states(session, instructed(items, "text"))


def held_out_pair_accuracy(differences: torch.Tensor, test: np.ndarray) -> float:
    """Share of the ``test`` pairs whose difference projects positively on the direction fitted on the others."""
    direction = principal_direction(differences[~test])
    return float(((differences[test].double() @ direction.unit.double()) > 0).double().mean())


def fit_instruction_direction(session, items: list[ConflictItem], seed: int = 0) -> DirectionFit:
    """MC² directions at every layer from ``items`` asked under both instructions (module docstring).

    Returns a fit of method "mc2": ``vectors`` the scaled first principal components,
    ``directions`` the mean paired differences, ``probe_accuracy`` the held-out pair accuracy
    per layer (direction fitted on half the scenes, scored on the other half), and in
    ``extra`` each layer's explained share and the items' scene seeds.
    """
    if len(items) < 4:
        raise InputError(f"an instruction direction needs at least 4 items; got {len(items)}")
    differences = paired_differences(session, items)
    directions = [principal_direction(d) for d in differences]
    rng = np.random.default_rng(seed)
    scenes = sorted({item.scene.seed for item in items})
    held = set(rng.permutation(scenes)[: len(scenes) // 2].tolist())
    test = np.array([item.scene.seed in held for item in items])
    accuracy = [held_out_pair_accuracy(d, test) for d in differences]
    extra = {"explained_variance": [d.explained for d in directions], "scale": [d.scale for d in directions],
             "instruction_scenes": [min(scenes), max(scenes) + 1]}
    return DirectionFit(differences.mean(1), accuracy, len(items), len(items), model_fingerprint(session.model),
                        extra, torch.stack([d.vector for d in directions]), "all", "mc2")
