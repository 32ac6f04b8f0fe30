"""Attention from generated tokens to image patches: per layer and head, rollout, image share.

Only this probe needs attention weights, so it runs its own pass with the eager kernel in the
language model only (the vision tower keeps its fast kernel), switched on for this request
(under the session lock) and restored afterwards. Weights are read one layer at a time: the
rows of the answer's query positions are kept, and rollout is accumulated as the pass goes
(one [S, S] product), so memory never holds layers x positions² values.
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


class Rollout:
    """Attention rollout (Abnar & Zuidema 2020) accumulated layer by layer: the product over
    layers of (1 - r) A + r I with rows renormalised, A the head-averaged attention."""

    def __init__(self, residual: float) -> None:
        self.residual = residual
        self.joint: torch.Tensor | None = None

    def add(self, mean_attention: torch.Tensor) -> None:
        eye = torch.eye(mean_attention.shape[-1], device=mean_attention.device)
        step = (1 - self.residual) * mean_attention + self.residual * eye
        step = step / step.sum(-1, keepdim=True)
        self.joint = step if self.joint is None else step @ self.joint

    def rows(self, queries: list[int]) -> torch.Tensor:
        assert self.joint is not None, "no layer was added"
        return self.joint[queries].cpu()


def rollout_rows(mean_attention: list[torch.Tensor], residual: float, queries: list[int]) -> torch.Tensor:
    """Attention rollout of the listed layers' head-averaged attention; [Q, S]."""
    rollout = Rollout(residual)
    for attention in mean_attention:
        rollout.add(attention)
    return rollout.rows(queries)


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
        to_image, share = [], []
        rollout = Rollout(params.residual)

        def keep(weights: torch.Tensor) -> None:
            weights = weights[0].float()
            rows = weights[:, queries][:, :, images]
            to_image.append(rows.cpu())
            share.append(rows.sum(-1).cpu())
            rollout.add(weights.mean(0))

        inputs = session.extend_inputs(run.prepared.inputs, run.token_map.input_ids[run.prepared.length:])
        reads = [read("attention_weights", layer, keep) for layer in range(session.n_layers)]
        with session.attention_implementation("eager", text_only=True):
            session.call(lambda: session.model(**inputs), reads)
        rolled = rollout.rows(queries)[:, images]
        return AttentionResult(**layout_of(run), image_positions=images, query_positions=queries,
                               to_image=torch.stack(to_image).numpy(), image_share=torch.stack(share).numpy(),
                               rollout=rolled.numpy().astype(np.float32))
