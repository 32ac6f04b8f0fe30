"""View of one contrastive decoding step: the distributions that chose the token."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import plotly.graph_objects as go


def _softmax(scores) -> np.ndarray:
    x = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(x)
    out = np.zeros_like(x)
    if finite.any():
        e = np.exp(x[finite] - x[finite].max())
        out[finite] = e / e.sum()
    return out


def step_distributions(trace: dict, step: int, decode: Callable[[int], str], method: str, top: int = 10) -> go.Figure:
    """Bars of expert, amateur and contrast probabilities over the step's most likely tokens."""
    dists = {name: _softmax(trace[name][step]) for name in ("expert", "amateur", "contrast")}
    ids = np.unique(np.concatenate([np.argsort(d)[::-1][:top] for d in dists.values()]))
    ids = ids[np.argsort(-dists["contrast"][ids])][:top]
    labels = [decode(int(i)).strip() or repr(decode(int(i))) for i in ids]
    fig = go.Figure([go.Bar(name=name, x=labels, y=d[ids]) for name, d in dists.items()])
    chosen = trace["tokens"][step].strip()
    fig.update_layout(barmode="group", title=f"{method}, step {step}: chose '{chosen}'", yaxis_title="probability",
                      height=320, margin={"l": 40, "r": 10, "t": 40, "b": 40})
    return fig
