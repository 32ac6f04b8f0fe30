"""Views of an attention result: attention to patches over the image, rollout, image share."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from views.common import grid_figure, main_grid_values, needs_grid


def _token(result, answer_index: int) -> str:
    return result.tokens[result.answer_positions[answer_index]].strip()


@needs_grid
def patch_attention(result, answer_index: int, layer: int, head: int | None, image: np.ndarray | None) -> go.Figure:
    """Attention from the position predicting a generated token to each patch (mean of heads if None)."""
    weights = result.to_image[layer, :, answer_index]
    values = weights.mean(0) if head is None else weights[head]
    grid_values = main_grid_values(result.patch, result.grids, result.main_grid, result.image_positions, values)
    which = "mean of heads" if head is None else f"head {head}"
    return grid_figure(image, result.grids[result.main_grid], grid_values,
                       f"attention → patches for '{_token(result, answer_index)}' (layer {layer}, {which})",
                       colorbar="weight")


@needs_grid
def rollout(result, answer_index: int, image: np.ndarray | None) -> go.Figure:
    values = main_grid_values(result.patch, result.grids, result.main_grid, result.image_positions,
                              result.rollout[answer_index])
    return grid_figure(image, result.grids[result.main_grid], values,
                       f"attention rollout for '{_token(result, answer_index)}'", colorbar="rollout")


def image_share(result, answer_index: int) -> go.Figure:
    """Layer x head: the fraction of attention mass on image tokens."""
    share = result.image_share[:, :, answer_index]
    fig = go.Figure(go.Heatmap(z=share, x=[f"h{h}" for h in range(share.shape[1])], y=list(range(share.shape[0])),
                               colorscale="Magma", zmin=0, zmax=1, colorbar={"title": "share"},
                               hovertemplate="layer %{y}, %{x}: %{z:.3f}<extra></extra>"))
    fig.update_layout(title=f"share of attention on the image for '{_token(result, answer_index)}'",
                      xaxis_title="head", yaxis_title="layer", height=300, margin={"l": 40, "r": 10, "t": 40, "b": 30})
    return fig
