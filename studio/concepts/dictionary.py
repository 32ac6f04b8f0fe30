"""Concept dictionaries for one word, in the style of Parekh et al., "A Concept-Based
Explainability Framework for Large Multimodal Models" (NeurIPS 2024, reference code xl-vlms).

The representations of one target word (e.g. "ring") across many scenes, Z [M, D], are
decomposed as Z ~ V U with K concept vectors U [K, D] and non-negative activations V [M, K]
(semi-NMF, Ding, Li and Jordan 2010), or by k-means (V one-hot). Each concept is grounded
visually by the scenes that activate it most and in words through the unembedding.

Departure: xl-vlms reads the word in the model's *generated* caption; we read it in the
teacher-forced ground-truth caption collected with the activation set, so every occurrence is
true in the image and the set is shared with the SAE.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from studio.concepts.activations import WORD, ActivationSet
from studio.engine.errors import InputError
from studio.engine.placement import weight_of

Method = Literal["semi-nmf", "kmeans"]
METHODS = ("semi-nmf", "kmeans")


@dataclass
class ConceptDictionary:
    """K concepts of one word: ``concepts`` [K, D], ``activations`` [M, K] per occurrence,
    ``seeds`` [M] the scene of each occurrence."""

    word: str
    layer: int
    method: str
    concepts: np.ndarray
    activations: np.ndarray
    seeds: np.ndarray

    def top_scenes(self, concept: int, n: int = 6) -> list[int]:
        """Scenes whose occurrence of the word activates ``concept`` most."""
        order = np.argsort(-self.activations[:, concept])[:n]
        return [int(self.seeds[i]) for i in order]


def semi_nmf(z: np.ndarray, k: int, iters: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Z [M, D] ~ V [M, K] @ U [K, D] with V >= 0 (multiplicative updates of Ding et al. 2010,
    initialised from k-means as they recommend)."""
    _, labels = _kmeans(z, k, seed)
    v = np.eye(k)[labels] + 0.2
    eps = 1e-9
    for _ in range(iters):
        u = np.linalg.lstsq(v, z, rcond=None)[0]
        zu, uu = z @ u.T, u @ u.T
        pos = lambda a: (np.abs(a) + a) / 2  # noqa: E731
        neg = lambda a: (np.abs(a) - a) / 2  # noqa: E731
        v *= np.sqrt((pos(zu) + v @ neg(uu)) / (neg(zu) + v @ pos(uu) + eps))
    return v, np.linalg.lstsq(v, z, rcond=None)[0]


def _kmeans(z: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.cluster import KMeans
    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(z)
    return km.cluster_centers_, km.labels_


def learn_concepts(acts: ActivationSet, token_id: int, word: str, n_concepts: int = 5,
                   method: str = "semi-nmf", seed: int = 0) -> ConceptDictionary:
    """Decompose the representations of ``word`` (token ``token_id``) in the activation set."""
    if method not in METHODS:
        raise InputError(f"unknown concept method {method!r}; choose one of {', '.join(METHODS)}")
    data, meta = acts.load()
    rows = (meta[:, 1] == WORD) & (meta[:, 3] == token_id)
    if rows.sum() < 2 * n_concepts:
        raise InputError(f"the word {word!r} occurs {int(rows.sum())} times in the activation set; "
                         f"{2 * n_concepts} are needed for {n_concepts} concepts")
    z = data[rows].double().numpy()
    if method == "kmeans":
        centres, labels = _kmeans(z, n_concepts, seed)
        v, u = np.eye(n_concepts)[labels], centres
    else:
        v, u = semi_nmf(z, n_concepts, seed=seed)
    return ConceptDictionary(word, acts.layer, method, u.astype(np.float32), v.astype(np.float32),
                             meta[rows, 0].astype(np.int64))


def top_words(session, directions: np.ndarray, n: int = 5) -> list[list[tuple[str, float]]]:
    """The words each direction [K, D] promotes most through the final norm and unembedding,
    with their logit scores."""
    with torch.no_grad():
        weight = weight_of(session.adapter.final_norm()).detach().float().cpu()
        unembed = weight_of(session.adapter.unembedding()).detach().float().cpu()
        logits = (torch.from_numpy(directions).float() * weight) @ unembed.T
    vocab = session.vocab
    return [[(vocab[i], float(v)) for v, i in zip(*row.topk(n))] for row in logits]
