"""Views of a relevancy result: the patch map over the image, relevancy of the text before the
token (prompt and earlier answer tokens), and each token's share of relevancy on the image."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from views.common import grid_figure, main_grid_values, needs_grid


def _row(result, answer_index: int) -> int:
    if answer_index not in result.answer_indices:
        raise ValueError(f"generated token {answer_index} was not explained; run the relevancy probe with "
                         f"answer_indices=({answer_index},)")
    return result.answer_indices.index(answer_index)


def _token(result, answer_index: int) -> str:
    return result.tokens[result.answer_positions[answer_index]].strip()


def patch_map(result, answer_index: int) -> np.ndarray:
    """[rows, cols] of the main grid: generated token ``answer_index``'s relevancy per patch."""
    values = result.relevancy[_row(result, answer_index), result.image_positions]
    return main_grid_values(result.patch, result.grids, result.main_grid, result.image_positions, values)


@needs_grid
def patches(result, answer_index: int, image: np.ndarray | None) -> go.Figure:
    """The relevancy of each patch for generated token ``answer_index``, over the image."""
    return grid_figure(image, result.grids[result.main_grid], patch_map(result, answer_index),
                       f"relevancy → patches for '{_token(result, answer_index)}'", colorbar="relevancy")


def text_tokens(result, answer_index: int) -> go.Figure:
    """Relevancy of each text position before the token (prompt, then earlier answer tokens)."""
    row = result.relevancy[_row(result, answer_index)]
    query = result.query_positions[_row(result, answer_index)]
    images = set(result.image_positions)
    keep = [i for i in range(query + 1) if i not in images]
    labels = [f"{i}:{result.tokens[i].strip() or '␣'}" for i in keep]
    fig = go.Figure(go.Bar(x=labels, y=row[keep]))
    fig.update_layout(title=f"relevancy → text for '{_token(result, answer_index)}' "
                            f"(image: {row[result.image_positions].sum():.2f} of the total)",
                      height=300, margin={"l": 40, "r": 10, "t": 40, "b": 60})
    return fig


def image_share(result) -> go.Figure:
    """Per explained token, the share of its relevancy on image tokens (the rest is on text)."""
    share = result.relevancy[:, result.image_positions].sum(1)
    labels = [f"{i}:{_token(result, i)}" for i in result.answer_indices]
    fig = go.Figure(go.Bar(x=labels, y=share))
    fig.update_layout(title="share of relevancy on the image per generated token", yaxis_range=[0, 1],
                      height=300, margin={"l": 40, "r": 10, "t": 40, "b": 60})
    return fig


def figures(result, image: np.ndarray | None) -> dict[str, go.Figure]:
    """The default figures (for ``views.registry``): the first explained token's patch map and
    text relevancy, and every explained token's image share."""
    if not result.answer_indices:
        return {}
    first = result.answer_indices[0]
    out = {"image_share": image_share(result), "text": text_tokens(result, first)}
    if image is not None and result.main_grid is not None:
        out["patches"] = patches(result, first, image)
    return out
