"""View of an implicit-multimodal-alignment result: the score by decoder layer."""
from __future__ import annotations

import plotly.graph_objects as go


def alignment_curve(result) -> go.Figure:
    """A line of the image-text alignment score (cosine of the pooled states) by layer."""
    layers = list(range(len(result.score)))
    held = "" if result.image_layer is None else f", image held at layer {result.image_layer}"
    fig = go.Figure([go.Scatter(x=layers, y=result.score, mode="lines+markers", name="alignment",
                                hovertemplate="layer %{x}: %{y:.3f}<extra></extra>")])
    fig.update_layout(title=f"implicit multimodal alignment: cosine of mean image vs mean text state "
                            f"(text: {result.text}{held})",
                      xaxis_title="layer", yaxis_title="cosine", yaxis_range=[-1, 1.05], height=300,
                      margin={"l": 40, "r": 10, "t": 40, "b": 30})
    return fig
