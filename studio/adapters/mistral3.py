"""Mistral 3 (Pixtral vision tower): one grid of ``[IMG]`` tokens, row-major, each token
``spatial_merge_size`` x ``spatial_merge_size`` patches merged by the projector.

The Pixtral image processor shrinks the image to fit its longest edge, then stretches each side
to a multiple of the token's pixel step, so the grid covers the whole original image;
``image_sizes`` holds that resized (height, width). The ``[IMG_BREAK]`` after each row and the
closing ``[IMG_END]`` are ordinary text tokens to the model (only ``image_token_id`` positions
receive image features), so they stay text here. The Pixtral arithmetic below also serves
LLaVA checkpoints with a Pixtral tower (Pixtral-12B: no merge), see ``studio.adapters.llava``.
"""
from __future__ import annotations

import torch

from studio.adapters.base import Adapter, AdapterError, ImagePlacement, PatchGrid, row_major


class Mistral3Adapter(Adapter):
    family = "mistral3"
    shares_prefix = True
    model_types = ("mistral3",)

    def _step(self) -> int:
        """Pixels per token side: the tower's patch times the projector's spatial merge."""
        return self.model.config.vision_config.patch_size * self.model.config.spatial_merge_size

    def image_layout(self, input_ids: torch.Tensor, tokens: list[str], inputs: dict,
                     image_size: tuple[int, int]) -> tuple[list[PatchGrid], dict[int, ImagePlacement]]:
        return pixtral_layout(self.image_positions(input_ids), inputs, image_size, self._step())

    def pixel_token_groups(self, inputs: dict) -> torch.Tensor:
        return pixtral_token_groups(inputs, self._step())


def pixtral_layout(positions: list[int], inputs: dict, image_size: tuple[int, int],
                   step: int) -> tuple[list[PatchGrid], dict[int, ImagePlacement]]:
    """The one image grid of a Pixtral-tower prompt: ``image_sizes`` // ``step`` tokens, row-major."""
    if inputs["image_sizes"].shape[0] != 1:
        raise AdapterError(f"Pixtral prompts map one image, found {inputs['image_sizes'].shape[0]}")
    rows, cols = (int(v) // step for v in inputs["image_sizes"][0])
    w, h = image_size
    return [PatchGrid("image", rows, cols, (0.0, 0.0, float(w), float(h)))], row_major(0, positions, rows, cols)


def pixtral_token_groups(inputs: dict, step: int) -> torch.Tensor:
    """[1, 1, H, W] token ordinals of ``pixel_values``: row-major ``step``-pixel cells of the
    resized image, -1 on the batch padding beyond ``image_sizes`` (the tower crops it away)."""
    _, _, height, width = inputs["pixel_values"].shape
    rows, cols = (int(v) // step for v in inputs["image_sizes"][0])
    ys, xs = torch.arange(height) // step, torch.arange(width) // step
    groups = ys[:, None] * cols + xs[None, :]
    groups[(ys[:, None] >= rows) | (xs[None, :] >= cols)] = -1
    return groups.reshape(1, 1, height, width)
