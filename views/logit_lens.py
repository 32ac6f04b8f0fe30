"""Views of a logit-lens result: layer x position heat map, decoded patch grid, trajectories."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from views.common import grid_figure, main_grid_values, needs_grid, position_labels


def _word(result, token_id: int) -> str:
    return result.words.get(str(int(token_id)), str(int(token_id)))


def _layer_labels(result) -> list[str]:
    """The decoded layers as category labels (rows stay evenly drawn when layers are skipped)."""
    return [f"layer {layer}" for layer in result.layers]


def _subset(result) -> str:
    """A title suffix naming how many layers were decoded, when not all were."""
    total = result.answer_probs.shape[0]
    return f" ({len(result.layers)} of {total} layers decoded)" if len(result.layers) < total else ""


def heatmap(result, token_id: int) -> go.Figure:
    """Probability of one token at every decoded layer (rows) and position (columns)."""
    t = result.target_index(token_id)
    labels = position_labels(result.tokens, result.patch)
    fig = go.Figure(go.Heatmap(z=result.target_probs[:, :, t], x=labels, y=_layer_labels(result),
                               colorscale="Viridis", zmin=0, zmax=1, colorbar={"title": "p"},
                               hovertemplate="layer %{y}, %{x}: p=%{z:.3f}<extra></extra>"))
    fig.update_layout(title=f"logit lens: p('{_word(result, token_id)}') by layer and position{_subset(result)}",
                      xaxis={"showticklabels": False, "title": "position (hover for token)"},
                      yaxis={"title": "layer"}, height=320, margin={"l": 40, "r": 10, "t": 40, "b": 30})
    return fig


@needs_grid
def patch_grid(result, layer: int, token_id: int, image: np.ndarray | None) -> go.Figure:
    """The main patch grid decoded at ``layer`` (or the decoded layer nearest it): each patch's
    top word, coloured by p(token)."""
    grid = result.grids[result.main_grid]
    positions = [i for i, p in enumerate(result.patch) if p and p[0] == result.main_grid]
    t, row = result.target_index(token_id), result.decoded(layer)
    layer = result.layers[row]
    values = main_grid_values(result.patch, result.grids, result.main_grid, positions,
                              result.target_probs[row, positions, t])
    tops = main_grid_values(result.patch, result.grids, result.main_grid, positions,
                            result.top_ids[row, positions, 0], fill=-1)
    labels = np.vectorize(lambda i: _word(result, i) if i >= 0 else "")(tops.astype(int))
    return grid_figure(image, grid, values, f"layer {layer}: top word per patch; colour = p('{_word(result, token_id)}')",
                       labels=labels, zmin=0, zmax=float(max(1e-6, np.nanmax(values))), colorbar="p")


def trajectory(result, answer_index: int) -> go.Figure:
    """A generated token's probability and rank at each layer, where it is predicted."""
    position = result.answer_positions[answer_index]
    layers = list(range(result.answer_probs.shape[0]))
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=layers, y=result.answer_probs[:, answer_index], name="probability", mode="lines+markers"))
    fig.add_trace(go.Scatter(x=layers, y=result.answer_ranks[:, answer_index], name="rank", mode="lines+markers",
                             line={"dash": "dot"}), secondary_y=True)
    fig.update_yaxes(title_text="probability", range=[0, 1], secondary_y=False)
    fig.update_yaxes(title_text="rank (0 = top)", secondary_y=True)
    fig.update_layout(title=f"emergence of '{result.tokens[position].strip()}' across layers",
                      xaxis_title="layer", height=300, margin={"l": 40, "r": 40, "t": 40, "b": 30})
    return fig


def position_layers(result, position: int) -> go.Figure:
    """Top words per layer at one position (a patch or a token): the model's reading of it."""
    k = result.top_ids.shape[2]
    words = np.vectorize(lambda i: _word(result, i))(result.top_ids[:, position])
    fig = go.Figure(go.Heatmap(z=result.top_probs[:, position], x=[f"top {j + 1}" for j in range(k)],
                               y=_layer_labels(result), text=words, texttemplate="%{text}",
                               colorscale="Blues", zmin=0, zmax=1, colorbar={"title": "p"}))
    label = position_labels(result.tokens, result.patch)[position]
    fig.update_layout(title=f"what position {label} means, layer by layer{_subset(result)}", yaxis_title="layer",
                      height=320,
                      margin={"l": 40, "r": 10, "t": 40, "b": 30})
    return fig


def position_trajectory(result, position: int, token_id: int) -> go.Figure:
    """One token's lens probability at one position (e.g. a clicked patch), layer by layer."""
    t = result.target_index(token_id)
    label = position_labels(result.tokens, result.patch)[position]
    fig = go.Figure(go.Scatter(x=list(result.layers), y=result.target_probs[:, position, t], mode="lines+markers"))
    fig.update_layout(title=f"p('{_word(result, token_id)}') at {label} by layer", xaxis_title="layer",
                      yaxis_title="probability", yaxis_range=[0, 1], height=300,
                      margin={"l": 40, "r": 10, "t": 40, "b": 30})
    return fig
