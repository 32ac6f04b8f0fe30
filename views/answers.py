"""Views of an answer-changing run (decoding method, steering, clamping): the answer beside its
baseline, token by token, with the changed tokens marked."""
from __future__ import annotations

import plotly.graph_objects as go

CHANGED, SAME = "#f5a623", "#eef0f2"


def answer_comparison(result) -> go.Figure:
    """Baseline and intervened answers as two aligned rows of tokens; tokens that differ are orange."""
    n = max(len(result.tokens), len(result.baseline_tokens), 1)
    base = result.baseline_tokens + [""] * (n - len(result.baseline_tokens))
    new = result.tokens + [""] * (n - len(result.tokens))
    fills = [[CHANGED if a != b else SAME for a, b in zip(base, new)]] * 2
    header = ["step"] + [str(i) for i in range(n)]
    cells = [["baseline", result.setting]] + [[b.strip(), a.strip()] for b, a in zip(base, new)]
    fig = go.Figure(go.Table(header={"values": header},
                             cells={"values": cells, "fill_color": [["white", "white"]] + list(map(list, zip(*fills)))}))
    fig.update_layout(title=f"{result.probe}: {result.setting}", height=220, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


def token_probabilities(result) -> go.Figure:
    """The probability of each chosen token under the distribution that chose it, beside the model's
    own (expert) probability when the method changed the scores."""
    labels = [f"{i}:{t.strip()}" for i, t in enumerate(result.tokens)]
    fig = go.Figure(go.Bar(x=labels, y=result.probs, name="chosen from (method)"))
    expert = getattr(result, "expert_probs", None)
    if expert is not None and len(expert) and not (expert == result.probs).all():
        fig.add_trace(go.Bar(x=labels, y=expert, name="model (expert)"))
    fig.update_layout(title=f"{result.setting}: probability of each chosen token", yaxis_range=[0, 1],
                      yaxis_title="p", height=280, margin={"l": 40, "r": 10, "t": 40, "b": 30})
    return fig
