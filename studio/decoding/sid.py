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
``AttentionInterface`` extension point, with the eager mask format registered beside it) computes eager attention and, for the amateur row
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
from transformers.masking_utils import AttentionMaskInterface, eager_mask
from transformers.models.llama.modeling_llama import eager_attention_forward

from studio.decoding import register
from studio.decoding.contrastive import ContrastiveStrategy
from studio.errors import InputError

ATTENTION_NAME = "studio_ct2s"
DEFAULT_LAYER = 2


@dataclass
class CT2SState:
    """One request's selection. ``image_positions`` [n, P]: each amateur row's vision key
    positions (rows n..2n-1 of the batch); ``dropped`` [n, P - keep] after each selection."""

    image_positions: torch.Tensor
    layer: int
    keep_ratio: float
    dropped: torch.Tensor | None = None
    kept_per_step: list = field(default_factory=list)

    @property
    def n(self) -> int:
        return self.image_positions.shape[0]


_STATE: contextvars.ContextVar[CT2SState | None] = contextvars.ContextVar("studio_ct2s", default=None)


def _select(state: CT2SState, weights: torch.Tensor) -> None:
    """Keep each amateur row's least-attended vision tokens (attention of the last position)."""
    last = weights[state.n:, :, -1].float().mean(1)
    importance = last.gather(1, state.image_positions.to(last.device))
    keep = max(1, math.ceil(state.keep_ratio * state.image_positions.shape[1]))
    order = importance.argsort(dim=1).cpu()
    ranked = state.image_positions.gather(1, order)
    state.dropped = ranked[:, keep:]
    state.kept_per_step.append(ranked[0, :keep].tolist())


def _mask_dropped(state: CT2SState, query, key, attention_mask):
    q_len, k_len = query.shape[2], key.shape[2]
    base = attention_mask[..., :k_len] if attention_mask is not None else \
        torch.zeros(key.shape[0], 1, q_len, k_len, dtype=query.dtype, device=query.device)
    mask = base.expand(key.shape[0], base.shape[1], q_len, k_len).clone()
    for i, dropped in enumerate(state.dropped):
        mask[state.n + i, :, :, dropped] = torch.finfo(mask.dtype).min
    return mask


def ct2s_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Eager attention; for the amateur rows, CT2S selection and masking when a request asks."""
    state = _STATE.get()
    layer = getattr(module, "layer_idx", None)
    active = state is not None and layer is not None and key.shape[0] == 2 * state.n
    if active and layer >= state.layer and state.dropped is not None and state.dropped.shape[1]:
        attention_mask = _mask_dropped(state, query, key, attention_mask)
    output, weights = eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
    if active and layer == state.layer - 1:
        _select(state, weights)
    return output, weights


AttentionInterface.register(ATTENTION_NAME, ct2s_attention)
AttentionMaskInterface.register(ATTENTION_NAME, eager_mask)


@register
@dataclass(frozen=True)
class SID(ContrastiveStrategy):
    """Self-introspective decoding; ``layer`` >= 1 within the model (None: 2, or the last layer
    of a shallower model), ``keep_ratio`` in (0, 1]."""

    layer: int | None = None
    keep_ratio: float = 0.17
    name = "sid"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.keep_ratio <= 1:
            raise InputError(f"keep_ratio must be in (0, 1]; got {self.keep_ratio}")
        if self.layer is not None and not (isinstance(self.layer, int) and self.layer >= 1):
            raise InputError(f"layer must be an integer >= 1; got {self.layer}")

    def selection_layer(self, session) -> int:
        """The decoder layer from which the amateur sees only the kept vision tokens."""
        layer = min(DEFAULT_LAYER, session.n_layers - 1) if self.layer is None else self.layer
        if not 1 <= layer < session.n_layers:
            raise InputError(f"layer {layer} is beyond the model's depth: choose 1..{session.n_layers - 1}")
        return layer

    def check(self, session) -> None:
        self.selection_layer(session)

    def amateurs(self, session, experts: dict, images: list, prompts: list[str]) -> dict:
        self.check(session)
        if not (experts["input_ids"] == session.adapter.image_token_id()).any():
            raise InputError("SID selects vision tokens: give an image")
        return experts

    @contextlib.contextmanager
    def hooks(self, session, inputs: dict):
        """CT2S attention for this batch: eager attention with the amateur rows' selection."""
        ids = inputs["input_ids"]
        n = ids.shape[0] // 2
        positions = torch.stack([(row == session.adapter.image_token_id()).nonzero().flatten() for row in ids[n:]])
        state = CT2SState(positions.cpu(), self.selection_layer(session), self.keep_ratio)
        reset = _STATE.set(state)
        try:
            with session.attention_implementation(ATTENTION_NAME, text_only=True):
                yield {"kept": state.kept_per_step, "image_positions": positions[0].tolist()}
        finally:
            _STATE.reset(reset)
