"""Views of an EOS-decision result: p(end) by layer and step, and at the output per step."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from views.common import SEQUENTIAL


def step_labels(steps: list[str]) -> list[str]:
    """A unique label per step: ``index:token``."""
    return [f"{i}:{s or '␣'}" for i, s in enumerate(steps)]


def heatmap(result) -> go.Figure:
    """p(end) (EOS + full stop) at every layer (rows) and generated step (columns)."""
    fig = go.Figure(go.Heatmap(z=result.p_end, x=step_labels(result.steps), y=list(range(result.p_end.shape[0])),
                               colorscale=SEQUENTIAL, zmin=0, zmax=1, colorbar={"title": "p(end)"},
                               hovertemplate="layer %{y}, step %{x}: p(end)=%{z:.3f}<extra></extra>"))
    fig.update_layout(title=f"EOS decision: p({' | '.join(result.end_tokens)}) by layer and step (logit lens)",
                      xaxis={"title": "step (token taken there)"}, yaxis={"title": "layer"}, height=320,
                      margin={"l": 40, "r": 10, "t": 40, "b": 30})
    return fig


def end_curve(result, named: Sequence[float] | None = None) -> go.Figure:
    """p(end) at the last layer (the model's own) per step, with EOS alone beside it; ``named``
    (one value per step, from a study with ground truth) adds the share of true objects named
    before each step."""
    x = step_labels(result.steps)
    eos = np.asarray(result.p_eos)[-1]
    fig = go.Figure([go.Scatter(x=x, y=result.p_end[-1], name="p(end): EOS + full stop", mode="lines+markers"),
                     go.Scatter(x=x, y=eos, name="p(EOS)", mode="lines+markers", line={"dash": "dot"})])
    if named is not None:
        fig.add_trace(go.Scatter(x=x[:len(named)], y=list(named), name="share of ground truth named",
                                 mode="lines", line={"shape": "hv", "dash": "dash"}))
    fig.update_layout(title="EOS decision at the output: probability of ending at each step",
                      xaxis_title="step (token taken there)", yaxis_title="p", yaxis_range=[0, 1.05], height=300,
                      margin={"l": 40, "r": 10, "t": 40, "b": 30})
    return fig
