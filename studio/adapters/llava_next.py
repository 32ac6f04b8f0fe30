"""LLaVA-NeXT: a base grid of the whole image, then high-res "anyres" tiles stitched into
one grid, unpadded to the image's aspect ratio, with a newline token closing every row.

The unpadding is reproduced by running the model's own ``unpad_image`` on a grid of
indices, so the mapping follows the library exactly rather than a re-derivation.
"""
from __future__ import annotations

import torch
from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape, unpad_image

from studio.adapters.base import Adapter, AdapterError, ImagePlacement, PatchGrid, row_major


class LlavaNextAdapter(Adapter):
    family = "llava_next"
    model_types = ("llava_next",)

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
        n_h, n_w = get_anyres_image_grid_shape(
            inputs["image_sizes"][0].tolist(), config.image_grid_pinpoints, config.vision_config.image_size)
        index = torch.arange(n_h * side * n_w * side).reshape(1, n_h * side, n_w * side)
        kept = unpad_image(index, inputs["image_sizes"][0])
        rows, cols = kept.shape[1:]
        if len(rest) != rows * (cols + 1):
            raise AdapterError(f"LLaVA-NeXT tiles: expected {rows}x({cols}+1) tokens, found {len(rest)}")
        placements = dict(base)
        for i, pos in enumerate(rest):
            r, c = divmod(i, cols + 1)
            placements[pos] = ImagePlacement(1, r, c) if c < cols else ImagePlacement(1, None, None)
        return [PatchGrid("base", side, side, whole), PatchGrid("tiles", rows, cols, whole)], placements
