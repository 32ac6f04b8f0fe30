"""Reading what self-attention computes its weights from, without asking it for the weights.

The language model's attention calls one function per layer through transformers'
``AttentionInterface`` with the post-rotary queries and keys, the mask and the scale. The
studio registers a reading twin of the model's own function (``studio-read:sdpa`` wraps
``sdpa``, ``studio-read:eager`` the family's eager one): it hands those inputs to the sinks of
the current request, then calls the original unchanged, so the output is bit-identical and the
fast kernel keeps running. From the inputs the weights can be rebuilt exactly
(:meth:`LayerAttention.weights`, :func:`last_query_weights`) when, and for whichever heads and
rows, someone needs them, instead of a second pass with the eager kernel that materialises
every layer's [heads, S, S] on the way.

The twin is also where the mask a layer attends with can be edited whatever the kernel
(:data:`MaskEdit`): the mask it was given (None for sdpa's causal flag, boolean, or additive)
is written out as an additive float mask, edited, and passed on; eager and sdpa both take it.

Sinks and edits are scoped like hooks: a ``ContextVar`` holds the current request's, per
attention module, so a pass served for another request never reaches them. :func:`reading`
switches the language model (never the vision tower) to the twin for the block and restores
the previous implementation in ``finally``. Only the eager and sdpa kernels have twins: a
model running another kernel (flash attention takes no arbitrary mask) runs sdpa's twin for
the request, so its numbers there are sdpa's.
"""
from __future__ import annotations

import contextvars
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel

from studio.engine.errors import StudioError

PREFIX = "studio-read:"
Sink = Callable[["AttentionInputs"], None]
MaskEdit = Callable[["AttentionInputs", torch.Tensor], torch.Tensor | None]  # (inputs, additive [B,1,q,k]) -> new
_ENTRIES: contextvars.ContextVar[tuple[tuple[int, Sink | None, MaskEdit | None], ...]] = contextvars.ContextVar(
    "studio_attention_entries", default=())


@dataclass(frozen=True)
class AttentionInputs:
    """One call of a self-attention function: ``query`` [B, H, q, d] and ``key`` [B, Hkv, k, d]
    after rotary embedding, ``mask`` as the function received it (None: causal when q > 1,
    boolean: True attends, float: additive), ``scaling`` and ``softcap`` (None: none)."""

    query: torch.Tensor
    key: torch.Tensor
    mask: torch.Tensor | None
    scaling: float
    causal: bool
    softcap: float | None = None

    def rows(self, rows: list[int]) -> "AttentionInputs":
        mask = self.mask if self.mask is None or self.mask.shape[0] == 1 else self.mask[rows]
        return AttentionInputs(self.query[rows], self.key[rows], mask, self.scaling, self.causal, self.softcap)


def _base_function(base: str, module: nn.Module) -> Callable:
    if base != "eager":
        return ALL_ATTENTION_FUNCTIONS[base]
    eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if eager is None:
        raise StudioError(f"{type(module).__name__}'s module has no eager_attention_forward to read through")
    return eager


def _reading_function(base: str) -> Callable:
    def attend(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               attention_mask: torch.Tensor | None, *args, **kwargs):
        entries = [(sink, edit) for owner, sink, edit in _ENTRIES.get() if owner == id(module)]
        if entries:
            scaling = kwargs.get("scaling")
            inputs = AttentionInputs(query, key, attention_mask,
                                     scaling if scaling is not None else 1 / math.sqrt(query.shape[-1]),
                                     bool(kwargs.get("is_causal", getattr(module, "is_causal", True))),
                                     kwargs.get("softcap"))
            for sink, _ in entries:
                if sink is not None:
                    sink(inputs)
            edits = [edit for _, edit in entries if edit is not None]
            if edits:
                mask = full_additive_mask(inputs)
                for edit in edits:
                    new = edit(inputs, mask)
                    mask = mask if new is None else new
                attention_mask = mask.to(query.dtype)
        return _base_function(base, module)(module, query, key, value, attention_mask, *args, **kwargs)
    return attend


def reading_name(base: str) -> str:
    """The registered reading twin of attention implementation ``base`` (registered on first
    use): eager's or sdpa's, and sdpa's for any other kernel."""
    kernel = base.removeprefix(PREFIX)
    twin = kernel if kernel in ("eager", "sdpa") else "sdpa"
    name = PREFIX + twin
    if name not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(name, _reading_function(twin))
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[twin])
    return name


@contextmanager
def reading(model: PreTrainedModel, sinks: dict[nn.Module, list[Sink]],
            edits: dict[nn.Module, list[MaskEdit]] | None = None) -> Iterator[None]:
    """Within the block, the language model's attention hands its inputs to ``sinks`` and its
    mask to ``edits`` (per attention module) of this request; unedited, its output is unchanged."""
    config = model.config.text_config
    previous = config._attn_implementation
    name = reading_name(previous)
    entries: list[tuple[int, Sink | None, MaskEdit | None]] = [(id(m), fn, None) for m, fns in sinks.items()
                                                                for fn in fns]
    entries += [(id(m), None, fn) for m, fns in (edits or {}).items() for fn in fns]
    reset = _ENTRIES.set(_ENTRIES.get() + tuple(entries))
    try:
        if name != previous:
            model.set_attn_implementation({"text_config": name})
        yield
    finally:
        if name != previous:
            model.set_attn_implementation({"text_config": previous})
        _ENTRIES.reset(reset)


def full_additive_mask(inputs: AttentionInputs) -> torch.Tensor:
    """The mask the kernel applies, as [B, 1, q, k] float32 additive (0 attends, -inf does not)."""
    batch, q, k = inputs.query.shape[0], inputs.query.shape[2], inputs.key.shape[2]
    device = inputs.query.device
    if inputs.mask is None:
        allowed = torch.ones(q, k, dtype=torch.bool, device=device)
        if inputs.causal and q > 1:  # sdpa's causal flag: upper-left aligned, as the kernel applies it
            allowed = allowed.tril()
        return torch.zeros(q, k, device=device).masked_fill(~allowed, -math.inf).expand(batch, 1, q, k)
    mask = inputs.mask
    if mask.shape[-2:] != (q, k):
        raise StudioError(f"an attention mask of shape {tuple(mask.shape)} for {q} queries and {k} keys")
    if mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, device=device).masked_fill(~mask, -math.inf)
    return mask.float().expand(batch, 1, q, k)


def last_query_weights(inputs: AttentionInputs) -> torch.Tensor:
    """Every row's attention [B, H, 1, k] (float32) of the last query position, as the kernel
    computes it."""
    mask = full_additive_mask(inputs)
    return torch.stack([LayerAttention(inputs.query[r, :, -1:], inputs.key[r], mask[r, 0, -1:], inputs.scaling,
                                       inputs.softcap).weights() for r in range(inputs.query.shape[0])])


def additive_mask(inputs: AttentionInputs, row: int = 0) -> torch.Tensor:
    """Row ``row``'s mask as [q, k] float32 additive (0 attends, -inf does not)."""
    return full_additive_mask(inputs)[row, 0]


@dataclass
class _Step:
    """One generated step's new query and key (row 0) and its additive mask row over the
    ``span`` keys it attended to (the last ``span`` positions)."""

    query: torch.Tensor
    key: torch.Tensor
    mask: torch.Tensor
    span: int


@dataclass
class QueryKeyLog:
    """One layer's queries and keys over a whole generation (row 0), from the prompt pass and
    each generated step. A step keeps only its new query and key (the cached keys it attends to
    are the earlier positions' own), so the log grows by one position per step."""

    prompt: AttentionInputs | None = None
    steps: list[_Step] = field(default_factory=list)

    def add(self, inputs: AttentionInputs) -> None:
        if self.prompt is None:
            self.prompt = AttentionInputs(inputs.query[:1].clone(), inputs.key[:1].clone(),
                                          None if inputs.mask is None else inputs.mask[:1],
                                          inputs.scaling, inputs.causal, inputs.softcap)
            return
        self.steps.append(_Step(inputs.query[0, :, -1:].clone(), inputs.key[0, :, -1:].clone(),
                                additive_mask(inputs)[-1].clone(), inputs.key.shape[2]))

    def assemble(self, length: int) -> "LayerAttention":
        """The first ``length`` positions' queries [H, L, d], keys [Hkv, L, d] and additive mask
        [L, L] (a sliding-window cache's forgotten keys at -inf)."""
        first = self.prompt
        if first is None:
            raise StudioError("no attention inputs were read for this layer")
        prompt = first.query.shape[2]
        mask = torch.full((length, length), -math.inf, device=first.query.device)
        mask[:prompt, :prompt] = additive_mask(first)
        steps = self.steps[:max(0, length - prompt)]
        for position, step in enumerate(steps, start=prompt):
            mask[position, position + 1 - step.span:position + 1] = step.mask
        queries = torch.cat([first.query[0], *(s.query for s in steps)], dim=1)
        keys = torch.cat([first.key[0], *(s.key for s in steps)], dim=1)
        return LayerAttention(queries[:, :length], keys[:, :length], mask, first.scaling, first.softcap)


@dataclass(frozen=True)
class LayerAttention:
    """One layer's attention inputs over a sequence: ``queries`` [H, S, d], ``keys`` [Hkv, S, d],
    ``mask`` [S, S] additive, as the layer attended with them."""

    queries: torch.Tensor
    keys: torch.Tensor
    mask: torch.Tensor
    scaling: float
    softcap: float | None = None

    @property
    def heads(self) -> int:
        return self.queries.shape[0]

    def weights(self, heads: slice = slice(None), rows: list[int] | None = None) -> torch.Tensor:
        """Softmax attention [h, r, S] (float32) of query ``heads`` at ``rows`` (None: every
        position), as the attention function computes it: scores scaled, soft-capped, masked."""
        group = self.heads // self.keys.shape[0]
        head_ids = torch.arange(self.heads)[heads]
        q, mask = self.queries[head_ids.to(self.queries.device)].float(), self.mask
        if rows is not None:
            index = torch.tensor(rows, dtype=torch.long, device=q.device)
            q, mask = q[:, index], mask[index]
        k = self.keys[(head_ids // group).to(self.keys.device)].float()
        scores = q @ k.transpose(1, 2) * self.scaling
        if self.softcap is not None:
            scores = torch.tanh(scores / self.softcap) * self.softcap
        return torch.softmax(scores + mask, dim=-1)
