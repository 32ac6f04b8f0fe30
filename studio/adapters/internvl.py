"""InternVL 3 / 3.5 (the transformers-native port): dynamic tiles plus a thumbnail, each a square
grid of pixel-shuffled patches; one run of ``<IMG_CONTEXT>`` tokens between ``<img>`` and
``</img>`` holds every view in the order of ``pixel_values``: tiles row-major, then the thumbnail.

The GotOcr2 image processor resizes the whole image (aspect ratio not kept) to cols x rows tiles
and cuts it evenly, so tile (r, c) covers the same fraction of the original image; the layout is
recomputed with the processor's own ``get_optimal_tiled_canvas`` and checked against the number
of views. A single view (a 1x1 layout, or no cropping) is the whole image resized: grid "image".
"""
from __future__ import annotations

import math

import torch
from torch import nn
from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas

from studio.adapters.base import Adapter, AdapterError, ImagePlacement, PatchGrid, row_major


class InternVLAdapter(Adapter):
    family = "internvl"
    shares_prefix = True
    model_types = ("internvl",)

    def view_encoder(self) -> nn.Module:
        return self.model.model.vision_tower

    def image_layout(self, input_ids: torch.Tensor, tokens: list[str], inputs: dict,
                     image_size: tuple[int, int]) -> tuple[list[PatchGrid], dict[int, ImagePlacement]]:
        positions = self.image_positions(input_ids)
        views, per_view = inputs["pixel_values"].shape[0], int(self._token_of_patch(inputs).max()) + 1
        if len(positions) != views * per_view:
            raise AdapterError(f"InternVL: {views} views of {per_view} tokens expected, found {len(positions)}")
        w, h = image_size
        boxes = [("image" if views == 1 else "global", (0.0, 0.0, float(w), float(h)))]
        if views > 1:
            cols, rows = self._tile_layout(h, w)
            if cols * rows != views - 1:
                raise AdapterError(f"InternVL: {views - 1} tiles do not match the processor's {cols}x{rows} layout")
            boxes[:0] = [(f"tile {r + 1},{c + 1}", (c * w / cols, r * h / rows, (c + 1) * w / cols, (r + 1) * h / rows))
                         for r in range(rows) for c in range(cols)]
        side = math.isqrt(per_view)
        placements: dict[int, ImagePlacement] = {}
        for v in range(views):
            placements.update(row_major(v, positions[v * per_view:(v + 1) * per_view], side, side))
        return [PatchGrid(name, side, side, box) for name, box in boxes], placements

    def _tile_layout(self, height: int, width: int) -> tuple[int, int]:
        """(cols, rows) of the tiles the image processor cuts an image of this size into."""
        image_processor = getattr(self.processor, "image_processor", None)
        if image_processor is None:
            raise AdapterError("InternVL tile geometry needs the model's image processor")
        size = image_processor.size
        return get_optimal_tiled_canvas((height, width), (size["height"], size["width"]),
                                        image_processor.min_patches, image_processor.max_patches)

    def _token_of_patch(self, inputs: dict) -> torch.Tensor:
        """[patch rows, patch cols]: the token (row-major within its view) each patch feeds, found
        by running the model's own pixel shuffle over patch indices."""
        _, _, height, width = inputs["pixel_values"].shape
        ph, pw = self.model.config.vision_config.patch_size
        index = torch.arange((height // ph) * (width // pw)).reshape(1, height // ph, width // pw, 1)
        merged = self.model.model.pixel_shuffle(index, scale_factor=self.model.config.downsample_ratio)
        merged = merged.reshape(-1, merged.shape[-1])
        owner = torch.empty(index.numel(), dtype=torch.long)
        owner[merged.flatten()] = torch.arange(merged.shape[0]).repeat_interleave(merged.shape[1])
        return owner.reshape(index.shape[1:3])

    def pixel_token_groups(self, inputs: dict) -> torch.Tensor:
        views, _, height, width = inputs["pixel_values"].shape
        ph, pw = self.model.config.vision_config.patch_size
        owner = self._token_of_patch(inputs)
        rows, cols = owner.shape
        padded = torch.nn.functional.pad(owner, (0, 1, 0, 1), value=-1)  # pixels the patch conv drops: -1
        local = padded[(torch.arange(height) // ph).clamp(max=rows)][:, (torch.arange(width) // pw).clamp(max=cols)]
        groups = torch.arange(views)[:, None, None] * (int(owner.max()) + 1) + local
        return torch.where(local >= 0, groups, -1).reshape(views, 1, height, width)
