"""Default figures for any probe result, by probe name: what the notebook export renders and
writes as standalone HTML, and what a script gets from ``vlm_studio.figures``.

Figures that follow a token follow the first generated one; figures laid over the image need
``image`` (an RGB array) and are left out without it.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import plotly.graph_objects as go

from views import alignment, answers, attention, attribution, detector, drift, eos, heads, logit_lens, relevancy

Figures = dict[str, go.Figure]


def _logit_lens(result, image) -> Figures:
    out = {"trajectory": logit_lens.trajectory(result, 0)} if result.answer_positions else {}
    if result.answer_ids:
        out["heatmap"] = logit_lens.heatmap(result, result.answer_ids[0])
        if image is not None and result.main_grid is not None:
            layer = result.answer_probs.shape[0] // 2
            out["patch_grid"] = logit_lens.patch_grid(result, layer, result.answer_ids[0], image)
    return out


def _attention(result, image) -> Figures:
    if not result.image_share.shape[2]:
        return {}
    out = {"image_share": attention.image_share(result, 0)}
    if image is not None and result.main_grid is not None:
        out["rollout"] = attention.rollout(result, 0, image)
    return out


def _attribution(result, image) -> Figures:
    out = {"prompt": attribution.prompt_scores(result)}
    if image is not None and result.main_grid is not None:
        out["occlusion"] = attribution.patch_scores(result, "occlusion", image)
    return out


def _detector(result, image) -> Figures:
    return {"boxes": detector.boxes(result, image)} if image is not None else {}


def _answer(result, image) -> Figures:
    out = {"comparison": answers.answer_comparison(result)}
    if getattr(result, "probs", None) is not None and len(result.probs):
        out["probabilities"] = answers.token_probabilities(result)
    return out


FIGURES: dict[str, Callable] = {
    "logit_lens": _logit_lens, "attention": _attention, "attribution": _attribution,
    "drift": lambda result, image: {"curve": drift.drift_curve(result)}, "detector": _detector,
    "decode": _answer, "steer": _answer, "clamp": _answer,
    "eos": lambda result, image: {"heatmap": eos.heatmap(result), "curve": eos.end_curve(result)},
    "alignment": lambda result, image: {"curve": alignment.alignment_curve(result)},
    "relevancy": relevancy.figures,
    "sav": lambda result, image: {"votes": heads.votes(result), "heads": heads.head_map(result.head_accuracy,
                                                                                       result.heads.tolist())},
}


def figures(result, image: np.ndarray | None = None) -> Figures:
    """The default figures of ``result`` (name -> plotly figure); none for an unknown probe."""
    make = FIGURES.get(result.probe)
    return make(result, image) if make else {}
