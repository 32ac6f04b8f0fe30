"""Attention from generated tokens to image patches: per layer and head, rollout, image share.

Only this probe needs attention weights, so it runs its own pass with the eager kernel,
switched on for this request only (under the session lock) and restored afterwards. Weights
are read by hooks on each layer's self-attention, one layer at a time, so memory never holds
all layers' [heads, S, S] maps at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from probes.base import Probe, ProbeParams, ProbeRequest
from probes.layout import LayoutResult, layout_of
from studio.engine.errors import InputError
from studio.interventions import read


@dataclass(frozen=True)
class AttentionParams(ProbeParams):
    """``residual``: weight of the identity added to head-averaged attention in rollout (0.5 in
    Abnar & Zuidema 2020)."""

    residual: float = 0.5

    def __post_init__(self) -> None:
        if not 0 <= self.residual < 1:
            raise InputError(f"residual must be in [0, 1); got {self.residual}")


@dataclass
class AttentionResult(LayoutResult):
    """Arrays (L layers, H heads, Q query positions = the positions predicting each generated
    token, P image positions ``image_positions``):

    - ``to_image`` [L, H, Q, P] float32: attention weight from each query to each image token;
    - ``image_share`` [L, H, Q] float32: fraction of each query's attention mass on image tokens;
    - ``rollout`` [Q, P] float32: attention rollout from each query to each image token.
    """

    image_positions: list[int]
    query_positions: list[int]
    to_image: np.ndarray
    image_share: np.ndarray
    rollout: np.ndarray
    probe = "attention"


def rollout_rows(mean_attention: list[torch.Tensor], residual: float, queries: list[int]) -> torch.Tensor:
    """Attention rollout: product over layers of (1 - r) A + r I, rows renormalised; [Q, S]."""
    seq = mean_attention[0].shape[-1]
    eye = torch.eye(seq)
    joint = eye
    for attention in mean_attention:
        step = (1 - residual) * attention + residual * eye
        step = step / step.sum(-1, keepdim=True)
        joint = step @ joint
    return joint[queries]


class Attention(Probe):
    name = "attention"
    description = "attention from each generated token to the image patches, per layer and head; rollout"
    params_class = AttentionParams
    needs_eager_attention = True
    needs_image = True

    def run(self, session, request: ProbeRequest, params: AttentionParams) -> AttentionResult:
        run = self.cached_run(session, request)
        images = run.token_map.image_positions
        queries = [run.predicting_position(i) for i in range(len(run.answer_positions))]
        to_image, share, means = [], [], []

        def keep(weights: torch.Tensor) -> None:
            weights = weights[0].float()
            to_image.append(weights[:, queries][:, :, images].cpu())
            share.append(weights[:, queries][:, :, images].sum(-1).cpu())
            means.append(weights.mean(0).cpu())

        inputs = session.extend_inputs(run.prepared.inputs, run.token_map.input_ids[run.prepared.length:])
        reads = [read("attention_weights", layer, keep) for layer in range(session.n_layers)]
        with session.attention_implementation("eager"):
            session.call(lambda: session.model(**inputs), reads)
        rollout = rollout_rows(means, params.residual, queries)[:, images]
        return AttentionResult(**layout_of(run), image_positions=images, query_positions=queries,
                               to_image=torch.stack(to_image).numpy(), image_share=torch.stack(share).numpy(),
                               rollout=rollout.numpy().astype(np.float32))
