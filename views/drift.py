"""View of a layer-drift result."""
from __future__ import annotations

import plotly.graph_objects as go


def drift_curve(result) -> go.Figure:
    layers = list(range(len(result.cos_blank)))
    fig = go.Figure([go.Scatter(x=layers, y=result.cos_blank, name="vs blanked image", mode="lines+markers"),
                     go.Scatter(x=layers, y=result.cos_removed, name="vs no image", mode="lines+markers")])
    fig.update_layout(title="layer drift: cosine of the last prompt state with the image vs without",
                      xaxis_title="layer", yaxis_title="cosine", yaxis_range=[-1, 1.05], height=300,
                      margin={"l": 40, "r": 10, "t": 40, "b": 30})
    return fig
