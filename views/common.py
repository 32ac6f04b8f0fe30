"""Shared pieces of the views: position labels, patch grids laid over the image, boxes.

Views are pure functions from results (numpy arrays and plain values) to plotly figures;
they import no torch and no model code.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import plotly.graph_objects as go

UNKNOWN_GEOMETRY = "patch geometry unknown for this family"
SEQUENTIAL = "Viridis"
DIVERGING = "RdBu"


def position_labels(tokens: list[str], patch: list) -> list[str]:
    """A short unique label per position: ``img r,c`` for patches, else ``index:token``."""
    labels = []
    for i, (tok, p) in enumerate(zip(tokens, patch)):
        labels.append(f"{i}:img {p[1]},{p[2]}" if p else f"{i}:{tok.strip() or '␣'}")
    return labels


def needs_grid(view: Callable[..., go.Figure]) -> Callable[..., go.Figure]:
    """A view of patches over the image: for a result without an image grid (a family the studio
    maps at token level only), a figure that says so instead of failing."""
    @functools.wraps(view)
    def drawn(result, *args, **kwargs) -> go.Figure:
        if result.main_grid is None:
            return go.Figure(layout={"title": f"{view.__name__.replace('_', ' ')}: {UNKNOWN_GEOMETRY}",
                                     "height": 240, "xaxis": {"visible": False}, "yaxis": {"visible": False}})
        return view(result, *args, **kwargs)
    return drawn


def main_grid_values(patch: list, grids: list, main_grid: int | None, positions: list[int],
                     values: np.ndarray, fill: float = np.nan) -> np.ndarray:
    """[rows, cols] of ``values`` (one per entry of ``positions``) placed on the main grid."""
    if main_grid is None:
        raise ValueError("this result has no image grid")
    grid = grids[main_grid]
    out = np.full((grid["rows"], grid["cols"]), fill, dtype=float)
    for pos, value in zip(positions, values):
        p = patch[pos]
        if p and p[0] == main_grid:
            out[p[1], p[2]] = value
    return out


def grid_figure(image: np.ndarray | None, grid: dict, values: np.ndarray, title: str,
                labels: np.ndarray | None = None, colorscale: str = SEQUENTIAL, opacity: float = 0.55,
                zmin: float | None = None, zmax: float | None = None, colorbar: str = "") -> go.Figure:
    """``values`` [rows, cols] as a translucent heat map over the image, aligned to the grid's box."""
    x0, y0, x1, y1 = grid["box"]
    dx, dy = (x1 - x0) / grid["cols"], (y1 - y0) / grid["rows"]
    fig = go.Figure()
    if image is not None:
        fig.add_trace(go.Image(z=image, hoverinfo="skip"))
    fig.add_trace(go.Heatmap(
        z=values, x0=x0 + dx / 2, dx=dx, y0=y0 + dy / 2, dy=dy, colorscale=colorscale, opacity=opacity,
        zmin=zmin, zmax=zmax, text=labels, texttemplate="%{text}" if labels is not None else None,
        colorbar={"title": colorbar}, hovertemplate="row %{customdata[0]}, col %{customdata[1]}: %{z:.3f}<extra></extra>",
        customdata=np.stack(list(np.mgrid[0:grid["rows"], 0:grid["cols"]]), axis=-1)))
    fig.update_yaxes(autorange="reversed", scaleanchor="x", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    fig.update_layout(title=title, margin={"l": 10, "r": 10, "t": 40, "b": 10}, height=380)
    return fig


def add_box(fig: go.Figure, box: list[float], label: str, colour: str = "#ff2d55") -> None:
    """Outline a (left, top, right, bottom) pixel box with a label."""
    x0, y0, x1, y1 = box
    fig.add_shape(type="rect", x0=x0, y0=y0, x1=x1, y1=y1, line={"color": colour, "width": 2})
    fig.add_annotation(x=x0, y=y0, text=label, showarrow=False, xanchor="left", yanchor="bottom",
                       font={"color": colour, "size": 11}, bgcolor="rgba(0,0,0,0.5)")


def image_figure(image: np.ndarray, title: str) -> go.Figure:
    fig = go.Figure(go.Image(z=image))
    fig.update_yaxes(showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    fig.update_layout(title=title, margin={"l": 10, "r": 10, "t": 40, "b": 10}, height=380)
    return fig
