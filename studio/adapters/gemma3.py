"""Gemma 3: the image squashed to the SigLIP tower's square input (aspect ratio not kept), its
patch grid average-pooled into ``mm_tokens_per_image`` soft tokens (a square grid, row-major)
between ``<start_of_image>`` and ``<end_of_image>``.

With pan-and-scan on, the processor adds one more such run per crop after the whole image's;
the crops are cut by the image processor's own ``pan_and_scan`` (run on index arrays to read
where each crop lies) with the processor's settings. When that does not give the prompt's
number of crops (e.g. settings passed at call time), the adapter refuses to place them.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from studio.adapters.base import (
    Adapter,
    AdapterError,
    ImagePlacement,
    PatchGrid,
    pooled_patch_groups,
    row_major,
    runs,
)

_PAN_AND_SCAN = ("pan_and_scan_min_crop_size", "pan_and_scan_max_num_crops", "pan_and_scan_min_ratio_to_activate")


class Gemma3Adapter(Adapter):
    family = "gemma3"
    model_types = ("gemma3",)

    def view_encoder(self) -> nn.Module:
        return self.model.model.vision_tower

    def image_layout(self, input_ids: torch.Tensor, tokens: list[str], inputs: dict,
                     image_size: tuple[int, int]) -> tuple[list[PatchGrid], dict[int, ImagePlacement]]:
        side = math.isqrt(self.model.config.mm_tokens_per_image)
        views = runs(self.image_positions(input_ids))
        w, h = image_size
        boxes = [(0.0, 0.0, float(w), float(h))] + (self._crop_boxes(image_size, len(views) - 1) if len(views) > 1 else [])
        grids = [PatchGrid("image" if i == 0 else f"crop {i}", side, side, box) for i, box in enumerate(boxes)]
        placements: dict[int, ImagePlacement] = {}
        for index, run in enumerate(views):
            placements.update(row_major(index, run, side, side))
        return grids, placements

    def _crop_boxes(self, image_size: tuple[int, int], n_crops: int) -> list[tuple[float, float, float, float]]:
        """(left, top, right, bottom) of each pan-and-scan crop, as the image processor cuts them."""
        image_processor = getattr(self.processor, "image_processor", None)
        settings = {name: getattr(self.processor, "images_kwargs", {}).get(name) for name in _PAN_AND_SCAN}
        if image_processor is None or None in settings.values():
            raise AdapterError("patch geometry unknown: the prompt has pan-and-scan crops but the processor's "
                               "pan-and-scan settings are not known")
        w, h = image_size
        xs = image_processor.pan_and_scan(np.broadcast_to(np.arange(w), (1, h, w)), **settings)
        ys = image_processor.pan_and_scan(np.broadcast_to(np.arange(h)[:, None], (1, h, w)), **settings)
        if len(xs) != n_crops:
            raise AdapterError(f"patch geometry unknown: the prompt has {n_crops} pan-and-scan crops, but the "
                               f"processor's settings cut a {w}x{h} image into {len(xs)}")
        return [(float(x[0, 0, 0]), float(y[0, 0, 0]), float(x[0, 0, -1] + 1), float(y[0, -1, 0] + 1))
                for x, y in zip(xs, ys)]

    def pixel_token_groups(self, inputs: dict) -> torch.Tensor:
        views, _, height, width = inputs["pixel_values"].shape
        vision = self.model.config.vision_config
        side = math.isqrt(self.model.config.mm_tokens_per_image)
        kernel = vision.image_size // vision.patch_size // side
        within = pooled_patch_groups(height, width, vision.patch_size, kernel, side)
        groups = torch.where(within >= 0, torch.arange(views)[:, None, None] * side * side + within, -1)
        return groups.reshape(views, 1, height, width)
