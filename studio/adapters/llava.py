"""LLaVA-1.5 (and the embedded world model): one square grid of patch tokens, row-major."""
from __future__ import annotations

import math

import torch

from studio.adapters.base import Adapter, AdapterError, ImagePlacement, PatchGrid, row_major


class LlavaAdapter(Adapter):
    family = "llava"
    model_types = ("llava",)

    def image_layout(self, input_ids: torch.Tensor, tokens: list[str], inputs: dict,
                     image_size: tuple[int, int]) -> tuple[list[PatchGrid], dict[int, ImagePlacement]]:
        positions = self.image_positions(input_ids)
        side = math.isqrt(len(positions))
        if side * side != len(positions):
            raise AdapterError(f"LLaVA expects a square number of image tokens, found {len(positions)}")
        w, h = image_size
        return [PatchGrid("image", side, side, (0.0, 0.0, float(w), float(h)))], row_major(0, positions, side, side)
