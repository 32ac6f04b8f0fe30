"""PaliGemma 1 and 2: the image squashed by the SigLIP image processor to the tower's square
input (aspect ratio not kept), one image token per patch in a square grid, row-major, all before
the ``<bos>`` that starts the prompt.

PaliGemma 2 soft-caps the logits (``final_logit_softcapping`` of its Gemma 2 text model) after
the unembedding, so the lens does too.
"""
from __future__ import annotations

import torch
from torch import nn

from studio.adapters.base import Adapter, ImagePlacement, PatchGrid, pooled_patch_groups, row_major


class PaliGemmaAdapter(Adapter):
    family = "paligemma"
    model_types = ("paligemma",)

    def view_encoder(self) -> nn.Module:
        return self.model.model.vision_tower
    answer_token_type = 1  # the model's own generation marks the answer as the suffix

    def image_layout(self, input_ids: torch.Tensor, tokens: list[str], inputs: dict,
                     image_size: tuple[int, int]) -> tuple[list[PatchGrid], dict[int, ImagePlacement]]:
        side = self._side()
        w, h = image_size
        grid = PatchGrid("image", side, side, (0.0, 0.0, float(w), float(h)))
        return [grid], row_major(0, self.image_positions(input_ids), side, side)

    def _side(self) -> int:
        vision = self.model.config.vision_config
        return vision.image_size // vision.patch_size

    def pixel_token_groups(self, inputs: dict) -> torch.Tensor:
        _, _, height, width = inputs["pixel_values"].shape
        groups = pooled_patch_groups(height, width, self.model.config.vision_config.patch_size, 1, self._side())
        return groups.reshape(1, 1, height, width)

    def lens(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm, unembedding and, as ``PaliGemmaForConditionalGeneration`` does, the soft cap."""
        logits = super().lens(hidden)
        cap = getattr(self.model.config.get_text_config(), "final_logit_softcapping", None)
        return logits if cap is None else torch.tanh(logits / cap) * cap
