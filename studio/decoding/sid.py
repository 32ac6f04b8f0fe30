"""SID: Self-Introspective Decoding (Huo et al., "Self-Introspective Decoding: Alleviating
Hallucinations for Large Vision-Language Models", ICLR 2025, arXiv 2408.02032).

The amateur is the same model with Context-and-Text-aware Token Selection (CT2S): at decoder
layer ``layer`` and after, it sees only the *least* important vision tokens, where importance
is the attention the current last position pays each vision token at layer ``layer - 1``
(mean over heads), recomputed at every decoding step. Keeping the unimportant tokens leaves
the amateur to answer from text and weak evidence, amplifying exactly the hallucinations the
contrast then removes. Combination as in VCD (:mod:`studio.decoding.contrastive`).

Following the reference code (huofushuo/SID): dropped tokens are masked out of attention
rather than removed, selection layer 2 and 100 of 576 vision tokens kept (``keep_ratio``
0.17) for LLaVA-1.5; alpha 1 and beta 0.1 as the paper's scripts pass them (their sampler in
fact falls back to alpha 0.5, which we note and do not copy).

Mechanism: a registered ``transformers`` attention function (the library's
``AttentionInterface`` extension point) computes eager attention and, for the amateur row
only, records importance at ``layer - 1`` and masks the dropped vision keys from ``layer`` on.
Its per-request state lives in a context variable, so other requests are never affected.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
from dataclasses import dataclass, field

import torch
from transformers import AttentionInterface
from transformers.models.llama.modeling_llama import eager_attention_forward

from studio.decoding import register
from studio.decoding.contrastive import ContrastiveStrategy, stack_rows
from studio.errors import InputError

ATTENTION_NAME = "studio_ct2s"
AMATEUR_ROW = 1


@dataclass
class CT2SState:
    """One request's selection: the image key positions, the layer, the ratio, and each step's kept set."""

    image_positions: torch.Tensor
    layer: int
    keep_ratio: float
    dropped: torch.Tensor | None = None
    kept_per_step: list = field(default_factory=list)


_STATE: contextvars.ContextVar[CT2SState | None] = contextvars.ContextVar("studio_ct2s", default=None)


def _select(state: CT2SState, weights: torch.Tensor) -> None:
    importance = weights[AMATEUR_ROW, :, -1, state.image_positions].float().mean(0)
    keep = max(1, math.ceil(state.keep_ratio * len(state.image_positions)))
    order = importance.argsort()
    state.dropped = state.image_positions[order[keep:]]
    state.kept_per_step.append(state.image_positions[order[:keep]].tolist())


def ct2s_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Eager attention; for the amateur row, CT2S selection and masking when a request asks."""
    state = _STATE.get()
    layer = getattr(module, "layer_idx", None)
    if state is not None and layer is not None and layer >= state.layer and state.dropped is not None \
            and len(state.dropped) and key.shape[0] > AMATEUR_ROW:
        q_len, k_len = query.shape[2], key.shape[2]
        base = attention_mask[..., :k_len] if attention_mask is not None else \
            torch.zeros(key.shape[0], 1, q_len, k_len, dtype=query.dtype, device=query.device)
        mask = base.expand(key.shape[0], 1, q_len, k_len).clone()
        mask[AMATEUR_ROW, :, :, state.dropped] = torch.finfo(mask.dtype).min
        attention_mask = mask
    output, weights = eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
    if state is not None and layer == state.layer - 1 and key.shape[0] > AMATEUR_ROW:
        _select(state, weights)
    return output, weights


AttentionInterface.register(ATTENTION_NAME, ct2s_attention)


@register
@dataclass(frozen=True)
class SID(ContrastiveStrategy):
    """Self-introspective decoding; ``layer`` >= 1 within the model, ``keep_ratio`` in (0, 1]."""

    layer: int = 2
    keep_ratio: float = 0.17
    name = "sid"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.keep_ratio <= 1:
            raise InputError(f"keep_ratio must be in (0, 1]; got {self.keep_ratio}")
        if not (isinstance(self.layer, int) and self.layer >= 1):
            raise InputError(f"layer must be an integer >= 1; got {self.layer}")

    def amateur_inputs(self, session, prepared) -> dict:
        return prepared.inputs

    def batch(self, session, prepared) -> dict:
        if self.layer >= session.n_layers:
            raise InputError(f"layer {self.layer} is beyond the model's depth: choose 1..{session.n_layers - 1}")
        if not prepared.token_map.image_positions:
            raise InputError("SID selects vision tokens: give an image")
        return stack_rows(prepared.inputs, prepared.inputs)

    @contextlib.contextmanager
    def hooks(self, session, prepared):
        """CT2S attention for this request: eager attention with the amateur row's selection."""
        state = CT2SState(torch.tensor(prepared.token_map.image_positions), self.layer, self.keep_ratio)
        reset = _STATE.set(state)
        try:
            with session.attention_implementation(ATTENTION_NAME, text_only=True):
                yield {"kept": state.kept_per_step, "image_positions": prepared.token_map.image_positions}
        finally:
            _STATE.reset(reset)
