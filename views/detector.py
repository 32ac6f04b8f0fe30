"""Views of a detector result: object words with their scores, and grounding boxes on the image."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from views.common import add_box, image_figure, needs_grid


def rows(result) -> list[list]:
    """Table rows: answer index, word, internal confidence, contextual similarity, box."""
    return [[int(i), w, round(float(c), 4), round(float(s), 4), [round(float(v), 1) for v in b]]
            for i, w, c, s, b in zip(result.answer_indices, result.words, result.internal_confidence,
                                     result.contextual_similarity, result.boxes)]


@needs_grid
def boxes(result, image: np.ndarray, selected: int | None = None) -> go.Figure:
    """The image with each object word's grounding box, labelled with its two scores."""
    fig = image_figure(image, "grounding: best-matching patches per object word")
    for k, (word, box) in enumerate(zip(result.words, result.boxes)):
        colour = "#ffd60a" if selected == result.answer_indices[k] else "#ff2d55"
        add_box(fig, list(box), f"{word} ic={result.internal_confidence[k]:.2f} "
                                f"cs={result.contextual_similarity[k]:.2f}", colour)
    return fig
