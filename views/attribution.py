"""Views of an attribution result: per-patch maps over the image and per-prompt-token bars."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from views.common import DIVERGING, grid_figure, main_grid_values, needs_grid

TITLES = {"occlusion": "occlusion: drop in log p when a patch is ablated",
          "ig_pixels": "integrated gradients on pixels (sum per patch)"}


@needs_grid
def patch_scores(result, which: str, image: np.ndarray | None) -> go.Figure:
    values = getattr(result, which)
    grid_values = main_grid_values(result.patch, result.grids, result.main_grid, result.image_positions, values)
    bound = float(np.nanmax(np.abs(grid_values))) or 1.0
    delta = f" (convergence δ {result.ig_pixels_delta:.2e})" if which == "ig_pixels" else ""
    return grid_figure(image, result.grids[result.main_grid], grid_values,
                       f"'{result.target_token.strip()}': {TITLES[which]}{delta}", colorscale=DIVERGING,
                       zmin=-bound, zmax=bound, colorbar="score")


def prompt_scores(result) -> go.Figure:
    """Integrated gradients on each prompt token's embedding (image tokens excluded)."""
    keep = [i for i, p in enumerate(result.patch[: len(result.ig_prompt)]) if p is None and
            i not in result.image_positions]
    labels = [f"{i}:{result.tokens[i].strip()}" for i in keep]
    fig = go.Figure(go.Bar(x=labels, y=result.ig_prompt[keep]))
    fig.update_layout(title=f"integrated gradients on prompt tokens for '{result.target_token.strip()}' "
                            f"(convergence δ {result.ig_prompt_delta:.2e})", height=300,
                      margin={"l": 40, "r": 10, "t": 40, "b": 60})
    return fig
