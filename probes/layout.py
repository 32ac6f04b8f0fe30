"""The token layout every result that points at positions carries, and how a run gives it."""
from __future__ import annotations

from dataclasses import dataclass

from probes.base import ProbeResult
from probes.runs import Run


@dataclass
class LayoutResult(ProbeResult):
    """Base of results about positions: ``tokens`` (one string per position of prompt + answer),
    ``patch`` ([grid, row, col] per position, None for text and patch-less image tokens),
    ``grids`` (name, rows, cols, box per patch grid), ``main_grid`` (the grid a click maps to),
    ``answer_positions`` and the original ``image_size`` (width, height)."""

    tokens: list[str]
    patch: list
    grids: list
    main_grid: int | None
    answer_positions: list[int]
    image_size: list | None


def layout_of(run: Run) -> dict:
    """The run's token layout as the keyword values of :class:`LayoutResult`."""
    tmap = run.token_map
    patch = [[p.grid, p.row, p.col] if (p := tmap.image.get(i)) and p.row is not None else None
             for i in range(len(tmap))]
    return {"tokens": tmap.tokens, "patch": patch,
            "grids": [{"name": g.name, "rows": g.rows, "cols": g.cols, "box": list(g.box)} for g in tmap.grids],
            "main_grid": tmap.main_grid, "answer_positions": run.answer_positions,
            "image_size": list(tmap.image_size) if tmap.image_size else None}
