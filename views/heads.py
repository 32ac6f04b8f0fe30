"""Views of per-head methods: the heads Sparse Attention Vectors chose, on a layer x head map."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go


def head_map(head_accuracy: np.ndarray, heads: Sequence[Sequence[int]], title: str = "") -> go.Figure:
    """Every head's few-shot accuracy (the SAV selection score) as a layer x head heat map, the
    chosen ``heads`` (layer, head; best first) outlined and numbered by rank.

    Takes plain arrays (``SAVClassifier.head_accuracy`` and ``.heads``), so it needs no torch."""
    accuracy = np.asarray(head_accuracy, dtype=float)
    if accuracy.ndim != 2:
        raise ValueError(f"head accuracy must be [layers, heads]; got shape {accuracy.shape}")
    layers, per_layer = accuracy.shape
    fig = go.Figure(go.Heatmap(z=accuracy, x=list(range(per_layer)), y=list(range(layers)), colorscale="Viridis",
                               zmin=0, zmax=1, colorbar={"title": "few-shot acc."},
                               hovertemplate="layer %{y}, head %{x}<br>accuracy %{z:.3f}<extra></extra>"))
    for rank, (layer, head) in enumerate(heads, start=1):
        fig.add_shape(type="rect", x0=head - 0.5, x1=head + 0.5, y0=layer - 0.5, y1=layer + 0.5,
                      line={"color": "#d62728", "width": 3})
        fig.add_annotation(x=head, y=layer, text=f"#{rank}", showarrow=False, font={"color": "white", "size": 14})
    fig.update_layout(title=title or f"Sparse attention vectors: the {len(heads)} chosen of {layers * per_layer} heads",
                      xaxis_title="head", yaxis_title="decoder layer", xaxis={"dtick": 1}, yaxis={"dtick": 1},
                      height=120 + 40 * layers, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


def votes(result) -> go.Figure:
    """How many of a SAV classifier's chosen heads vote for each class (a ``sav`` probe result)."""
    fig = go.Figure(go.Bar(x=list(result.classes), y=np.asarray(result.votes).tolist(),
                           marker_color=["#d62728" if c == result.prediction else "#1f77b4" for c in result.classes]))
    fig.update_layout(title=f"SAV ({result.task or 'task not named'}): {result.prediction}, "
                            f"{int(np.max(result.votes))} of {len(result.heads)} head vote(s)",
                      xaxis_title="class", yaxis_title="heads voting", height=300,
                      margin={"l": 40, "r": 10, "t": 40, "b": 30})
    return fig
