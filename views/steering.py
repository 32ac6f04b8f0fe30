"""Views of modality-preference steering: probe accuracy by layer and the alpha curve."""
from __future__ import annotations

import plotly.graph_objects as go

STYLE_COLOURS = {"neutral": "#1f77b4", "image": "#2ca02c", "text": "#d62728"}


def probe_curve(accuracy: list[float], steered_layers: list[int]) -> go.Figure:
    """Held-out accuracy of a linear probe for image- vs text-following, per layer."""
    fig = go.Figure(go.Scatter(x=list(range(len(accuracy))), y=accuracy, mode="lines+markers", name="probe"))
    for layer in steered_layers:
        fig.add_vline(x=layer, line_dash="dot", annotation_text="steered")
    fig.update_layout(title="Which side will the answer follow? Linear probe, held-out accuracy",
                      xaxis_title="decoder layer", yaxis_title="accuracy", yaxis_range=[0.4, 1.02], height=320,
                      margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


def alpha_curve(sweep: dict, current: float | None = None) -> go.Figure:
    """Share of conflict answers following the image, per instruction style, against alpha;
    accuracy on matched (non-conflict) items dashed."""
    fig = go.Figure()
    for style in ("neutral", "neutral answerable", "image", "text"):
        ys = [row[style]["image_ratio"] for row in sweep["conflict"] if style in row]
        if ys:
            base = style.split()[0]
            name = f"{base} instruction" + (", items answerable from the image" if style != base else "")
            fig.add_trace(go.Scatter(x=sweep["alphas"], y=ys, mode="lines+markers", name=name,
                                     line={"color": STYLE_COLOURS[base], "dash": "dot" if style != base else None}))
    fig.add_trace(go.Scatter(x=sweep["alphas"], y=sweep["matched_accuracy"], mode="lines", name="matched accuracy",
                             line={"dash": "dash", "color": "#555"}))
    if current is not None:
        fig.add_vline(x=current, line_color="black", annotation_text=f"α = {current:g}")
    fig.update_layout(title=f"Steering layers {sweep['layers']}: answers following the image",
                      xaxis_title=f"α (units of {sweep.get('unit', 'the image-minus-text mean difference')})",
                      yaxis_title="share",
                      yaxis_range=[-0.02, 1.02], height=360, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig
