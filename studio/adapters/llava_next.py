"""LLaVA-NeXT: a base grid of the whole image, then high-res "anyres" tiles stitched into
one grid, unpadded to the image's aspect ratio, with a newline token closing every row.

The unpadding is reproduced by running the model's own ``unpad_image`` on a grid of
indices, so the mapping follows the library exactly rather than a re-derivation.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers.models.llava_next.modeling_llava_next import (
    get_anyres_image_grid_shape,
    unpad_image,
)

from studio.adapters.base import (
    Adapter,
    AdapterError,
    ImagePlacement,
    PatchGrid,
    row_major,
)


class LlavaNextAdapter(Adapter):
    family = "llava_next"
    shares_prefix = True
    model_types = ("llava_next",)

    def view_encoder(self) -> nn.Module:
        return self.model.model.vision_tower

    def image_layout(self, input_ids: torch.Tensor, tokens: list[str], inputs: dict,
                     image_size: tuple[int, int]) -> tuple[list[PatchGrid], dict[int, ImagePlacement]]:
        config = self.model.config
        positions = self.image_positions(input_ids)
        side = config.vision_config.image_size // config.vision_config.patch_size
        w, h = image_size
        whole = (0.0, 0.0, float(w), float(h))
        base = row_major(0, positions[: side * side], side, side)
        rest = positions[side * side:]
        if len(rest) <= 1:
            grids = [PatchGrid("base", side, side, whole)]
            return grids, {**base, **{p: ImagePlacement(0, None, None) for p in rest}}
        kept = self._kept_tile_patches(inputs)
        rows, cols = kept.shape
        if len(rest) != rows * (cols + 1):
            raise AdapterError(f"LLaVA-NeXT tiles: expected {rows}x({cols}+1) tokens, found {len(rest)}")
        placements = dict(base)
        for i, pos in enumerate(rest):
            r, c = divmod(i, cols + 1)
            placements[pos] = ImagePlacement(1, r, c) if c < cols else ImagePlacement(1, None, None)
        return [PatchGrid("base", side, side, whole), PatchGrid("tiles", rows, cols, whole)], placements

    def _tiles(self, inputs: dict) -> tuple[int, int, int]:
        """(tile rows, tile cols, patches per tile side) of the high-res view."""
        vision = self.model.config.vision_config
        n_h, n_w = get_anyres_image_grid_shape(
            inputs["image_sizes"][0].tolist(), self.model.config.image_grid_pinpoints, vision.image_size)
        return n_h, n_w, vision.image_size // vision.patch_size

    def _kept_tile_patches(self, inputs: dict) -> torch.Tensor:
        """[rows, cols] flat indices into the padded tile grid of the patches the model keeps."""
        n_h, n_w, side = self._tiles(inputs)
        index = torch.arange(n_h * side * n_w * side).reshape(1, n_h * side, n_w * side)
        return unpad_image(index, inputs["image_sizes"][0])[0]

    def pixel_token_groups(self, inputs: dict) -> torch.Tensor:
        _, views, _, height, width = inputs["pixel_values"].shape
        n_h, n_w, side = self._tiles(inputs)
        patch = height // side
        py, px = torch.arange(height) // patch, torch.arange(width) // patch
        local = py[:, None] * side + px[None, :]
        kept = self._kept_tile_patches(inputs)
        cols = kept.shape[1]
        ordinal = torch.full((n_h * side * n_w * side,), -1, dtype=torch.long)
        r, c = torch.meshgrid(torch.arange(kept.shape[0]), torch.arange(cols), indexing="ij")
        ordinal[kept.flatten()] = side * side + (r * (cols + 1) + c).flatten()
        groups = torch.full((views, height, width), -1, dtype=torch.long)
        groups[0] = local
        for t in range(1, min(views, 1 + n_h * n_w)):
            ti, tj = divmod(t - 1, n_w)
            flat = (ti * side + py[:, None]) * (n_w * side) + tj * side + px[None, :]
            groups[t] = ordinal[flat]
        return groups.reshape(1, views, 1, height, width)
