"""Sparse Attention Vectors as a probe: what a fitted SAV classifier's chosen heads vote for on
one image and prompt (:mod:`studio.heads.sav`, Mitra et al. 2025).

A classifier is fitted for one task (``vlm-studio sav fit --task colour``: few-shot examples of
the world, 20 per class) and read here: the chosen heads' outputs at the prompt's last position
are compared with the class means, each head votes, the majority is the prediction. The
shipped classifier (``studio/assets/sav``) answers the colour question of the embedded model
("what color is the <kind> ?"); for any other prompt its vote is still computed but is only
meaningful for the task it was fitted on, which the result names.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from probes.answers import fitted
from probes.base import Probe, ProbeParams, ProbeRequest, ProbeResult
from studio.engine.assets import asset
from studio.engine.errors import InputError


@dataclass(frozen=True)
class SAVParams(ProbeParams):
    """``classifier``: a folder from ``vlm-studio sav fit`` (empty: the shipped one)."""

    classifier: str = ""


@dataclass
class SAVResult(ProbeResult):
    """``votes`` [C] int: how many chosen heads vote for each of the C ``classes``; ``heads`` [k, 2]
    int (layer, head; best first) and ``head_votes`` [k] int (the class index each votes for);
    ``head_accuracy`` [L, H] float32: every head's few-shot accuracy (the selection score)."""

    prompt: str
    task: str
    classes: list[str]
    prediction: str
    votes: np.ndarray
    heads: np.ndarray
    head_votes: np.ndarray
    head_accuracy: np.ndarray
    probe = "sav"


def load_classifier(folder: str | Path, session):
    """A saved classifier, refused when it was fitted on another model."""
    from studio.concepts.activations import model_fingerprint
    from studio.heads.sav import SAVClassifier
    classifier = SAVClassifier.load(folder)
    if classifier.model and classifier.model != model_fingerprint(session.model):
        raise InputError(f"the SAV classifier in {folder} was fitted on another model; fit one for this model "
                         "with `vlm-studio sav fit`")
    return classifier


class SparseAttentionVectors(Probe):
    name = "sav"
    description = "a fitted Sparse Attention Vector classifier: which class its chosen heads vote for"
    params_class = SAVParams
    needs_image = True
    needs_fit = True

    def run(self, session, request: ProbeRequest, params: SAVParams) -> SAVResult:
        from studio.heads.sav import last_token_heads
        classifier = fitted(session, "sav", params.classifier or asset("sav"), load_classifier)
        run = self.cached_run(session, request)
        features = last_token_heads(session, [run.prepared.image], [request.prompt])
        head_votes = classifier.head_votes(features)[0].numpy().astype(np.int64)
        votes = classifier.votes(features)[0].astype(np.int64)
        return SAVResult(prompt=run.prepared.prompt, task=classifier.task, classes=list(classifier.classes),
                         prediction=classifier.predict(features)[0], votes=votes,
                         heads=np.array(classifier.heads, dtype=np.int64).reshape(-1, 2), head_votes=head_votes,
                         head_accuracy=np.asarray(classifier.head_accuracy, dtype=np.float32))
