"""Attention from generated tokens to image patches: per layer and head, rollout, image share.

No pass of its own: the cached run read every layer's post-rotary queries and keys in the
pass that decoded the answer (through the model's own fast kernel), and the weights are
rebuilt from them here exactly as the kernel computes them (scaled, masked, softmax), one
layer and a few heads at a time. The rows of the answer's query positions are kept; rollout is
taken over rows only, from the last layer down (``rows @ A_l``: [Q, S] x [S, S] per layer
instead of the [S, S] x [S, S] product of the joint matrix), so memory never holds layers x
positions² values and the cost stays far below a forward.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from probes.base import Probe, ProbeParams, ProbeRequest
from probes.layout import LayoutResult, layout_of
from studio.engine.attention_reads import LayerAttention
from studio.engine.errors import InputError


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
    """Rows of attention rollout (Abnar & Zuidema 2020), the product over layers of
    (1 - r) A + r I with rows renormalised (A the head-averaged attention), for the query
    rows only: layers are added from the last to the first."""

    def __init__(self, residual: float, queries: list[int]) -> None:
        self.residual = residual
        self.queries = queries
        self.rows: torch.Tensor | None = None

    def add_below(self, mean_attention: torch.Tensor) -> None:
        """Add the layer beneath those added so far."""
        eye = torch.eye(mean_attention.shape[-1], device=mean_attention.device)
        step = (1 - self.residual) * mean_attention + self.residual * eye
        step = step / step.sum(-1, keepdim=True)
        self.rows = step[self.queries] if self.rows is None else self.rows @ step


def rollout_rows(mean_attention: list[torch.Tensor], residual: float, queries: list[int]) -> torch.Tensor:
    """Attention rollout of the listed layers' (first to last) head-averaged attention; [Q, S]."""
    rollout = Rollout(residual, queries)
    for attention in reversed(mean_attention):
        rollout.add_below(attention)
    assert rollout.rows is not None, "no layer was added"
    return rollout.rows.cpu()


HEAD_CHUNK_VALUES = 1 << 24  # attention values rebuilt at once (64 MB in float32)


def _layer_rows(layer: LayerAttention, queries: list[int], images: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer's [H, Q, P] attention to the image and its [S, S] head mean, a few heads at a time."""
    length = layer.mask.shape[0]
    chunk = max(1, HEAD_CHUNK_VALUES // (length * length))
    rows, total = [], torch.zeros(length, length, device=layer.queries.device)
    for start in range(0, layer.heads, chunk):
        weights = layer.weights(slice(start, start + chunk))
        total += weights.sum(0)
        rows.append(weights[:, queries][:, :, images].cpu())
    return torch.cat(rows), total / layer.heads


class Attention(Probe):
    name = "attention"
    description = "attention from each generated token to the image patches, per layer and head; rollout"
    params_class = AttentionParams
    needs_image = True

    def run(self, session, request: ProbeRequest, params: AttentionParams) -> AttentionResult:
        run = self.cached_run(session, request)
        images = run.token_map.image_positions
        queries = [run.predicting_position(i) for i in range(len(run.answer_positions))]
        to_image: list[torch.Tensor] = []
        rollout = Rollout(params.residual, queries)

        def rebuild() -> None:  # no model call, but the model's device memory: under the session's guard
            for layer in reversed(range(len(run.attention))):
                rows, mean = _layer_rows(run.attention_layer(layer), queries, images)
                to_image.insert(0, rows)
                rollout.add_below(mean)
        session.call(rebuild)
        assert rollout.rows is not None
        stacked = torch.stack(to_image)
        return AttentionResult(**layout_of(run), image_positions=images, query_positions=queries,
                               to_image=stacked.numpy(), image_share=stacked.sum(-1).numpy(),
                               rollout=rollout.rows[:, images].cpu().numpy().astype(np.float32))
