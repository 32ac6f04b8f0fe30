"""Any other model whose image features are spliced into the decoder's token stream at an
image token id (InstructBLIP's query tokens, Aya Vision, LFM2-VL, GLM-4V and the rest).

What is certain without family knowledge: which positions hold image tokens (the config's
image token id), the decoder layers, final norm and unembedding (found by the usual module
names). A patch grid is taken as certain only when one image fills a square number of tokens
that is the vision tower's patch grid merged by a whole factor (1 to 4 per side), and no
Q-Former resamples it; then it is "the image, row-major, covering the whole picture" (a
processor that crops would make the box wrong: such families need their own adapter).
Otherwise image tokens are mapped at token level, with no grid and no pixel box, and panels
that need geometry say so. Pixel attribution per image token needs the family's arithmetic,
so it is refused here.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from studio.adapters.base import Adapter, AdapterError, ImagePlacement, PatchGrid, row_major

LANGUAGE_MODEL_PATHS = ("model.language_model", "language_model.model", "language_model", "model.text_model",
                        "model.model", "model")
UNKNOWN_GEOMETRY = "patch geometry unknown for this family"


class GenericAdapter(Adapter):
    family = "generic"
    model_types = ()

    def text_model(self) -> Any:
        for path in LANGUAGE_MODEL_PATHS:
            module = _attribute_path(self.model, path)
            if isinstance(getattr(module, "layers", None), nn.ModuleList) and hasattr(module, "norm"):
                return module
        raise AdapterError(f"cannot find the decoder layers and final norm of this {type(self.model).__name__} "
                           f"(looked under {', '.join(LANGUAGE_MODEL_PATHS)})")

    def unembedding(self) -> nn.Linear:
        head = self.model.get_output_embeddings()
        if head is None:
            raise AdapterError(f"{type(self.model).__name__} has no output embedding (unembedding) the lens can use")
        return head

    def image_layout(self, input_ids: torch.Tensor, tokens: list[str], inputs: dict,
                     image_size: tuple[int, int]) -> tuple[list[PatchGrid], dict[int, ImagePlacement]]:
        positions = self.image_positions(input_ids)
        side = math.isqrt(len(positions))
        if positions and side * side == len(positions) and _one_image(inputs) and self._merged_patch_grid(side):
            w, h = image_size
            return [PatchGrid("image", side, side, (0.0, 0.0, float(w), float(h)))], row_major(0, positions, side, side)
        return [], {p: ImagePlacement(-1, None, None) for p in positions}

    def _merged_patch_grid(self, side: int) -> bool:
        config = self.model.config
        vision = getattr(config, "vision_config", None)
        if vision is None or getattr(config, "qformer_config", None) is not None:
            return False
        size, patch = getattr(vision, "image_size", None), getattr(vision, "patch_size", None)
        if not (isinstance(size, int) and isinstance(patch, int) and patch):
            return False
        return any(size // patch == side * merge for merge in (1, 2, 3, 4))

    def pixel_token_groups(self, inputs: dict) -> torch.Tensor:
        raise AdapterError(f"{UNKNOWN_GEOMETRY} ({self.model.config.model_type}): pixel attribution per image token "
                           "needs the family's own adapter")


def _attribute_path(root: object, path: str) -> object | None:
    for name in path.split("."):
        root = getattr(root, name, None)
        if root is None:
            return None
    return root


def _one_image(inputs: dict) -> bool:
    pixels = inputs.get("pixel_values")
    return torch.is_tensor(pixels) and pixels.dim() == 4 and pixels.shape[0] == 1
