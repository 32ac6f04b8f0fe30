"""Steering vectors: ``alpha`` × a vector added to chosen decoder layers' outputs, at chosen
positions, as :class:`~studio.interventions.Intervention` values.

Positions: "all" (every position and generated step), "text" (the prompt after the image, and
every generated step) or "prompt" (the prompt after the image only; generated tokens see the
steered prompt through the cache).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from studio.engine.errors import InputError
from studio.interventions import Intervention, Phase, Where, position_mask

Positions = Literal["all", "text", "prompt"]
POSITIONS: tuple[str, ...] = ("all", "text", "prompt")
MAX_ALPHA = 20.0


def check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not (isinstance(alpha, (int, float)) and abs(alpha) <= MAX_ALPHA):
        raise InputError(f"alpha must be between -{MAX_ALPHA} and {MAX_ALPHA}; got {alpha}")
    return float(alpha)


def check_positions(positions: str) -> str:
    if positions not in POSITIONS:
        raise InputError(f"positions must be one of {', '.join(POSITIONS)}; got {positions!r}")
    return positions


def text_mask(session, input_ids: torch.Tensor) -> torch.Tensor:
    """[batch, seq] True at the positions after each row's last image token (every position of
    a row without an image); left padding sits before the image, so it is never marked."""
    mask = position_mask("after_image", input_ids, session.adapter.image_token_id())
    assert mask is not None
    return mask


@dataclass(frozen=True)
class Steering:
    """One steering setting: ``alpha`` × ``vectors[layer]`` added at each of ``layers``, at
    ``positions`` (see the module docstring)."""

    vectors: torch.Tensor
    layers: tuple[int, ...]
    alpha: float
    positions: Positions = "all"

    def __post_init__(self) -> None:
        check_alpha(self.alpha)
        check_positions(self.positions)
        if not self.layers:
            raise InputError("choose at least one layer to steer")
        for layer in self.layers:
            if not (isinstance(layer, int) and 0 <= layer < len(self.vectors)):
                raise InputError(f"layer {layer} is out of range: choose 0..{len(self.vectors) - 1}")

    def interventions(self) -> list[Intervention]:
        """The edits: where they apply follows ``positions``."""
        where: Where = "all" if self.positions == "all" else "after_image"
        phase: Phase = "prompt" if self.positions == "prompt" else "both"
        return [Intervention("residual", layer, self._add(self.vectors[layer]), phase, where)
                for layer in self.layers]

    def _add(self, vector: torch.Tensor):
        def edit(h: torch.Tensor) -> torch.Tensor:
            return h + (self.alpha * vector).to(device=h.device, dtype=h.dtype)
        return edit


def steered_answers(session, images: list, prompts: list[str], max_new_tokens: int,
                    steering: Steering) -> list[str]:
    """Greedy answers for many (image, prompt) pairs generated together under ``steering``."""
    return session.answer_batch(images, prompts, max_new_tokens, interventions=steering.interventions())
