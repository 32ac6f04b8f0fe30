"""Qwen2-VL and Qwen2.5-VL: one grid of merged patches (``spatial_merge_size``^2 patches per
token), row-major, covering the whole (smart-resized) image."""
from __future__ import annotations

import torch

from studio.adapters.base import Adapter, ImagePlacement, PatchGrid, row_major


class Qwen2VLAdapter(Adapter):
    family = "qwen2_vl"
    model_types = ("qwen2_vl", "qwen2_5_vl")

    def image_layout(self, input_ids: torch.Tensor, tokens: list[str], inputs: dict,
                     image_size: tuple[int, int]) -> tuple[list[PatchGrid], dict[int, ImagePlacement]]:
        merge = self.model.config.vision_config.spatial_merge_size
        t, gh, gw = (int(v) for v in inputs["image_grid_thw"][0])
        rows, cols = t * gh // merge, gw // merge
        w, h = image_size
        grid = PatchGrid("image", rows, cols, (0.0, 0.0, float(w), float(h)))
        return [grid], row_major(0, self.image_positions(input_ids), rows, cols)

    def pixel_token_groups(self, inputs: dict) -> torch.Tensor:
        merge = self.model.config.vision_config.spatial_merge_size
        rows = inputs["pixel_values"].shape[0]
        return (torch.arange(rows) // (merge * merge)).reshape(rows, 1)
