"""LLaVA-OneVision: LLaVA-NeXT's layout (a base grid of the whole image, then anyres tiles
stitched into one grid, unpadded to the image's aspect ratio, a newline token closing every
row) plus the model's "anyres_max_N" step: when the unpadded grid holds more than N tiles'
worth of patches by over 10% in area, ``pack_image_features`` pools it bilinearly to
``int(rows // ratio) x int(cols // ratio)``, a grid that still covers the whole image.

Unpadding reuses the LLaVA-NeXT adapter (the library's own ``unpad_image`` run on indices).
Departure, for pixel attribution only: a pooled token mixes up to 2x2 patches, so each patch is
given to the one pooled token that weighs it most (the weights read off the library's own
``interpolate`` applied to one-hot rows); patches no token weighs feed none (-1).
"""
from __future__ import annotations

import math

import torch

from studio.adapters.base import AdapterError, ImagePlacement, PatchGrid, dominant_target, row_major
from studio.adapters.llava_next import LlavaNextAdapter


class LlavaOnevisionAdapter(LlavaNextAdapter):
    family = "llava_onevision"
    shares_prefix = True
    model_types = ("llava_onevision",)

    def image_layout(self, input_ids: torch.Tensor, tokens: list[str], inputs: dict,
                     image_size: tuple[int, int]) -> tuple[list[PatchGrid], dict[int, ImagePlacement]]:
        positions = self.image_positions(input_ids)
        side = self._tiles_side()
        rows, cols = self._pooled_shape(*self._kept_tile_patches(inputs).shape)
        if len(positions) != side * side + rows * (cols + 1):
            raise AdapterError(f"LLaVA-OneVision: expected {side}x{side} base + {rows}x({cols}+1) tile tokens, "
                               f"found {len(positions)} image tokens")
        whole = (0.0, 0.0, float(image_size[0]), float(image_size[1]))
        grids = [PatchGrid("base", side, side, whole)] + ([PatchGrid("tiles", rows, cols, whole)] if rows * cols else [])
        placements = row_major(0, positions[: side * side], side, side)
        last = len(grids) - 1  # the tiles, or the base when an extreme aspect unpads them away
        for i, pos in enumerate(positions[side * side:]):
            r, c = divmod(i, cols + 1)
            placements[pos] = ImagePlacement(last, r, c) if c < cols else ImagePlacement(last, None, None)
        return grids, placements

    def _pooled_shape(self, rows: int, cols: int) -> tuple[int, int]:
        """The tile grid after ``pack_image_features``' "anyres_max_N" pooling, as the model computes it
        (the model reads N with ``.strip("anyres_max_")``, the same for every "anyres_max_<N>")."""
        side = self._tiles_side()
        limit = int(self.model.config.vision_aspect_ratio.removeprefix("anyres_max_"))
        ratio = math.sqrt(rows * cols / (limit * side**2))
        return (int(rows // ratio), int(cols // ratio)) if ratio > 1.1 else (rows, cols)

    def _tiles_side(self) -> int:
        vision = self.model.config.vision_config
        return vision.image_size // vision.patch_size

    def pixel_token_groups(self, inputs: dict) -> torch.Tensor:
        """LLaVA-NeXT's groups (unpooled ordinals) renumbered to the pooled grid's tokens."""
        groups = super().pixel_token_groups(inputs)
        rows, cols = self._kept_tile_patches(inputs).shape
        out_rows, out_cols = self._pooled_shape(rows, cols)
        if (out_rows, out_cols) == (rows, cols):
            return groups
        base = self._tiles_side() ** 2
        to_row, to_col = dominant_target(rows, out_rows), dominant_target(cols, out_cols)
        pooled = base + to_row[:, None] * (out_cols + 1) + to_col[None, :]
        pooled[(to_row[:, None] < 0) | (to_col[None, :] < 0)] = -1
        table = torch.cat([torch.arange(base), torch.cat([pooled, torch.full((rows, 1), -1)], 1).flatten()])
        return torch.where(groups >= 0, table[groups.clamp(min=0)], groups)
