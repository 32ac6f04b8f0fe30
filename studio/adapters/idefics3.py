"""Idefics3 and SmolVLM: the image split into rows x cols tiles plus a global view; each
view is a run of image tokens (a square grid after pixel shuffle, row-major) introduced by a
``<row_i_col_j>`` or ``<global-img>`` text token, which is how tiles are recognised here.

A tile's box assumes the processor's tiles divide the (resized) image evenly, which is how
the image processor cuts them; the resize keeps the aspect ratio only approximately.
"""
from __future__ import annotations

import math
import re

import torch
from torch import nn

from studio.adapters.base import (
    Adapter,
    AdapterError,
    ImagePlacement,
    PatchGrid,
    row_major,
    runs,
)

_TILE = re.compile(r"<row_(\d+)_col_(\d+)>")


class Idefics3Adapter(Adapter):
    family = "idefics3"
    shares_prefix = True
    model_types = ("idefics3", "smolvlm")

    def view_encoder(self) -> nn.Module:
        return self.model.model.vision_model

    def text_model(self):
        return self.model.model.text_model

    def image_layout(self, input_ids: torch.Tensor, tokens: list[str], inputs: dict,
                     image_size: tuple[int, int]) -> tuple[list[PatchGrid], dict[int, ImagePlacement]]:
        w, h = image_size
        views = runs(self.image_positions(input_ids))
        labels = [tokens[run[0] - 1] if run[0] > 0 else "" for run in views]
        tiles = [tuple(int(x) for x in m.groups()) for m in map(_TILE.fullmatch, labels) if m]
        n_rows = max((r for r, _ in tiles), default=1)
        n_cols = max((c for _, c in tiles), default=1)
        grids: list[PatchGrid] = []
        placements: dict[int, ImagePlacement] = {}
        for run, label in zip(views, labels):
            side = math.isqrt(len(run))
            if side * side != len(run):
                raise AdapterError(f"Idefics3 view '{label}' has {len(run)} tokens, not a square grid")
            match = _TILE.fullmatch(label)
            if match:
                r, c = int(match.group(1)) - 1, int(match.group(2)) - 1
                box = (c * w / n_cols, r * h / n_rows, (c + 1) * w / n_cols, (r + 1) * h / n_rows)
                name = f"tile {r + 1},{c + 1}"
            else:
                box, name = (0.0, 0.0, float(w), float(h)), "global"
            placements.update(row_major(len(grids), run, side, side))
            grids.append(PatchGrid(name, side, side, box))
        return grids, placements

    def pixel_token_groups(self, inputs: dict) -> torch.Tensor:
        _, views, _, height, width = inputs["pixel_values"].shape
        step = self.model.config.vision_config.patch_size * self.model.config.scale_factor
        per_row, per_view = width // step, (height // step) * (width // step)
        ys, xs = torch.arange(height) // step, torch.arange(width) // step
        within = ys[:, None] * per_row + xs[None, :]
        groups = torch.arange(views)[:, None, None] * per_view + within[None]
        return groups.reshape(1, views, 1, height, width)
