"""LLaVA-1.5 (and the embedded world model): one square grid of patch tokens, row-major.

The CLIP processor resizes the shortest edge and centre-crops, so the grid covers the
central crop of a non-square image; the grid's box says which part. LLaVA checkpoints with a
Pixtral tower (Pixtral-12B) follow the Pixtral arithmetic of ``studio.adapters.mistral3``
instead, with one token per patch (no spatial merge).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from studio.adapters.base import (
    Adapter,
    AdapterError,
    ImagePlacement,
    PatchGrid,
    row_major,
)
from studio.adapters.mistral3 import pixtral_layout, pixtral_token_groups


class LlavaAdapter(Adapter):
    family = "llava"
    shares_prefix = True
    model_types = ("llava",)

    def image_layout(self, input_ids: torch.Tensor, tokens: list[str], inputs: dict,
                     image_size: tuple[int, int]) -> tuple[list[PatchGrid], dict[int, ImagePlacement]]:
        positions = self.image_positions(input_ids)
        if self._pixtral():
            return pixtral_layout(positions, inputs, image_size, self.model.config.vision_config.patch_size)
        side = math.isqrt(len(positions))
        if side * side != len(positions):
            raise AdapterError(f"LLaVA expects a square number of image tokens, found {len(positions)}")
        return [PatchGrid("image", side, side, self._visible_box(image_size))], row_major(0, positions, side, side)

    def _visible_box(self, image_size: tuple[int, int]) -> tuple[float, float, float, float]:
        w, h = image_size
        image_processor = getattr(self.processor, "image_processor", None)
        if image_processor is None or not getattr(image_processor, "do_center_crop", False):
            return (0.0, 0.0, float(w), float(h))
        shortest = image_processor.size.get("shortest_edge")
        crop = image_processor.crop_size
        if not shortest:
            return (0.0, 0.0, float(w), float(h))
        scale = shortest / min(w, h)
        cw, ch = min(w, crop["width"] / scale), min(h, crop["height"] / scale)
        return ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)

    def view_encoder(self) -> nn.Module | None:
        return None if self._pixtral() else self.model.model.vision_tower  # Pixtral joins its images' patches

    def _pixtral(self) -> bool:
        return self.model.config.vision_config.model_type == "pixtral"

    def pixel_token_groups(self, inputs: dict) -> torch.Tensor:
        if self._pixtral():
            return pixtral_token_groups(inputs, self.model.config.vision_config.patch_size)
        _, _, height, width = inputs["pixel_values"].shape
        patch = self.model.config.vision_config.patch_size
        ys = torch.arange(height) // patch
        xs = torch.arange(width) // patch
        return (ys[:, None] * (width // patch) + xs[None, :]).reshape(1, 1, height, width)
