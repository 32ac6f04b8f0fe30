"""SID: Self-Introspective Decoding (Huo et al., "Self-Introspective Decoding: Alleviating
Hallucinations for Large Vision-Language Models", ICLR 2025, arXiv 2408.02032).

The amateur is the same model with Context-and-Text-aware Token Selection (CT2S): at decoder
layer ``layer`` and after, it sees only the *least* important vision tokens, where importance
is the attention the current last position pays each vision token at layer ``layer - 1``
(mean over heads), recomputed at every decoding step. Keeping the unimportant tokens leaves
the amateur to answer from text and weak evidence, amplifying exactly the hallucinations the
contrast then removes. Combination as in VCD (:mod:`studio.decoding.contrastive`).

Following the reference code (huofushuo/SID, its attention-mask path), by default
(``prune="mask"``): dropped tokens are masked out of attention rather than removed, and the
selection is made again at every decoding step; selection layer 2 and 100 of 576 vision tokens
kept (``keep_ratio`` 0.17) for LLaVA-1.5. Masked, the amateur is one more row of the expert's
batch, which on a GPU (and on this CPU in bfloat16) costs about nothing per token (model card,
"Performance on real model shapes"), but its prompt pass computes every dropped token in every
layer.

``prune="drop"`` removes them, as the paper's low-cost claim implies: the kept tokens are
selected once, from the last prompt position's attention, and the amateur's layers from
``layer`` on compute the prompt without the dropped tokens (the ``kept_positions``
intervention site, :mod:`studio.engine.pruning`); their cache entries are zeros that every
later step masks, so the amateur keeps sharing the expert's batch. A departure from the
reference code, named: the selection is not made again at later steps (a removed token cannot
come back without the cache entries it never got; the reference's own removing path, FastV in
place, "KV-cache not supported", recomputes the whole sequence every step to re-select). It
equals ``prune="mask"`` with the selection frozen at the prompt (tested on every family).

Presets: ``paper`` (alpha 1, beta 0.1, 100 of 576 tokens kept) and ``reference-code``
(its POPE script: alpha 0.5, and its greedy path applies no plausibility constraint, beta 0;
100 kept tokens). The reference's CHAIR script keeps 50 of 576: add ``keep_ratio=0.087``.

Mechanism: :class:`~studio.interventions.Intervention` values on the amateur rows of the
:class:`~studio.decoding.contrastive.ContrastiveBatch` (never the experts): a read of the
attention inputs at ``layer - 1`` (queries, keys, mask) from which the last position's
attention is computed as the kernel computes it, selecting the kept tokens (every pass; with
``drop`` the prompt pass only), an edit of the attention mask at ``layer`` and after that hides
the dropped ones (with ``drop``: at generated steps), and with ``drop`` the removal of the
dropped positions from those layers in the prompt pass. All go through the model's own
attention kernel (no switch to eager attention).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

from studio.decoding import register
from studio.decoding.base import DecodeBatch, DecodePlan
from studio.decoding.contrastive import ContrastiveStrategy, as_contrastive
from studio.engine.attention_reads import AttentionInputs, last_query_weights
from studio.engine.errors import InputError, StudioError
from studio.interventions import Intervention

DEFAULT_LAYER = 2


@dataclass
class CT2SState:
    """One request's selection. ``image_positions`` [n, P]: each amateur row's vision key
    positions; ``dropped`` [n, P - keep] after each selection."""

    image_positions: torch.Tensor
    keep_ratio: float
    dropped: torch.Tensor | None = None
    kept_per_step: list = field(default_factory=list)

    def select(self, weights: torch.Tensor) -> None:
        """Keep each amateur row's least-attended vision tokens: ``weights`` [n, heads, q, k],
        importance = the last query position's attention, mean over heads."""
        last = weights[:, :, -1].float().mean(1)
        importance = last.gather(1, self.image_positions.to(last.device))
        keep = max(1, math.ceil(self.keep_ratio * self.image_positions.shape[1]))
        order = importance.argsort(dim=1).cpu()
        ranked = self.image_positions.gather(1, order)
        self.dropped = ranked[:, keep:]
        self.kept_per_step.append(ranked[0, :keep].tolist())

    def kept_positions(self, states: torch.Tensor) -> torch.Tensor:
        """Each amateur row's positions other than the dropped ones, ascending [n, L - dropped]
        (``states`` [n, L, d]: the rows entering the selection layer)."""
        if self.dropped is None:
            raise StudioError("SID removes vision tokens only after selecting them")
        keep = torch.ones(states.shape[:2], dtype=torch.bool)
        keep.scatter_(1, self.dropped, False)
        return keep.nonzero()[:, 1].view(states.shape[0], -1).to(states.device)

    def mask_dropped(self, mask: torch.Tensor) -> torch.Tensor | None:
        """``mask`` [n, 1, q, k] (additive) with the dropped keys of each row at the dtype's minimum."""
        if self.dropped is None or not self.dropped.shape[1]:
            return None
        out = mask.clone()
        for i, dropped in enumerate(self.dropped):
            out[i, :, :, dropped.to(out.device)] = torch.finfo(out.dtype).min
        return out


@register
@dataclass(frozen=True)
class SID(ContrastiveStrategy):
    """Self-introspective decoding; ``layer`` >= 1 within the model (None: 2, or the last layer
    of a shallower model), ``keep_ratio`` in (0, 1], ``prune`` "mask" (reference code: re-selected
    every step) or "drop" (selected once, removed from the amateur's prompt pass)."""

    layer: int | None = None
    keep_ratio: float = 0.17
    prune: Literal["mask", "drop"] = "mask"
    name = "sid"
    PRESETS: ClassVar[dict[str, dict]] = {
        "paper": {"alpha": 1.0, "beta": 0.1, "keep_ratio": 100 / 576},
        "reference-code": {"alpha": 0.5, "beta": 0.0, "keep_ratio": 100 / 576},
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.keep_ratio <= 1:
            raise InputError(f"keep_ratio must be in (0, 1]; got {self.keep_ratio}")
        if self.layer is not None and not (isinstance(self.layer, int) and self.layer >= 1):
            raise InputError(f"layer must be an integer >= 1; got {self.layer}")
        if self.prune not in ("mask", "drop"):
            raise InputError(f"prune must be 'mask' or 'drop'; got {self.prune!r}")

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

    def plan(self, session, batch: DecodeBatch) -> DecodePlan:
        """The contrast, plus CT2S on the amateur rows."""
        pairs = as_contrastive(batch)
        ids = pairs.inputs["input_ids"]
        rows = tuple(pairs.amateurs)
        positions = torch.stack([(ids[r] == session.adapter.image_token_id()).nonzero().flatten() for r in rows])
        state = CT2SState(positions.cpu(), self.keep_ratio)
        layer = self.selection_layer(session)
        drop = self.prune == "drop"  # select once, remove from the prompt pass, mask the same at later steps
        interventions = [Intervention("attention_inputs", layer - 1, _reader(state), "prompt" if drop else "both",
                                      rows=rows)]
        if drop:
            interventions.append(Intervention("kept_positions", layer, state.kept_positions, "prompt", rows=rows))
        interventions += [Intervention("attention_mask", i, state.mask_dropped, "generated" if drop else "both",
                                       rows=rows) for i in range(layer, session.n_layers)]
        plan = super().plan(session, batch)
        plan.trace.update(kept=state.kept_per_step, image_positions=positions[0].tolist())
        return DecodePlan(plan.processors, interventions, None, plan.trace)


def _reader(state: CT2SState):
    def read(inputs: AttentionInputs) -> None:
        state.select(last_query_weights(inputs))
        return None
    return read
