"""Views of concept dictionaries: the feature map, a feature's grounding, and clamping."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

ATTRIBUTE_COLOURS = {"kind": "#1f77b4", "colour": "#d62728", "size": "#2ca02c", "position": "#9467bd", "none": "#bbbbbb"}
WEAK_AUROC = 0.75


def feature_map(xy: list[list[float]], features: list[dict], selected: int | None = None) -> go.Figure:
    """Decoder directions in 2-D (UMAP), coloured by the attribute each feature detects best;
    features whose best AUROC is below 0.75 are grey."""
    points = np.asarray(xy, dtype=float)
    groups: dict[str, list[int]] = {}
    for i, f in enumerate(features):
        groups.setdefault(f["attribute"] if f["auroc"] >= WEAK_AUROC else "none", []).append(i)
    fig = go.Figure()
    for attribute, ids in groups.items():
        fig.add_trace(go.Scatter(
            x=points[ids, 0], y=points[ids, 1], mode="markers", name=attribute, customdata=ids,
            marker={"color": ATTRIBUTE_COLOURS.get(attribute, "#444"), "size": 6, "opacity": 0.8},
            text=[f"feature {i}: {features[i]['attribute']}={features[i]['value']} (AUROC {features[i]['auroc']:.2f})"
                  for i in ids], hovertemplate="%{text}<extra></extra>"))
    if selected is not None:
        fig.add_trace(go.Scatter(x=[points[selected, 0]], y=[points[selected, 1]], mode="markers", name=f"feature {selected}",
                                 marker={"color": "black", "size": 14, "symbol": "circle-open", "line": {"width": 3}}))
    fig.update_layout(title="Features (UMAP of decoder directions)", height=420,
                      margin={"l": 10, "r": 10, "t": 40, "b": 10}, xaxis={"visible": False}, yaxis={"visible": False})
    return fig


def crops_figure(crops: list[tuple[np.ndarray, float]], title: str) -> go.Figure:
    """A feature's top patches (crops with the patch outlined) and their activations."""
    if not crops:
        return go.Figure(layout={"title": f"{title}: never active on held-out patches"})
    fig = make_subplots(rows=1, cols=len(crops), subplot_titles=[f"{v:.2f}" for _, v in crops])
    for i, (crop, _) in enumerate(crops, start=1):
        fig.add_trace(go.Image(z=crop, hoverinfo="skip"), row=1, col=i)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(title=title, height=200, margin={"l": 10, "r": 10, "t": 60, "b": 10})
    return fig


def words_figure(words: list[str], scores: list[float], title: str) -> go.Figure:
    """Words a direction promotes through the unembedding."""
    fig = go.Figure(go.Bar(x=scores[::-1], y=words[::-1], orientation="h", marker_color="#1f77b4"))
    fig.update_layout(title=title, height=260, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


def top_features_table(values: np.ndarray, features: list[dict], n: int = 10) -> list[list]:
    """Rows [feature, max activation on the image, best attribute, AUROC] for the strongest features."""
    order = np.argsort(-values)[:n]
    return [[int(i), round(float(values[i]), 3), f"{features[i]['attribute']}={features[i]['value']}" if features else "",
             round(features[i]["auroc"], 3) if features else None] for i in order if values[i] > 0]
