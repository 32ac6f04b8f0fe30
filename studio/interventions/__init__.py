"""One way to read or edit the model during a request: :class:`Intervention` values, applied by
:func:`intervene` for the duration of one model call.

Every edit in the studio is one of these: steering vectors, dictionary clamping, SID's key
masking, steering-vector training, and the reads that capture residual states or attention
weights. An intervention states where it applies instead of guessing from tensor shapes:

- ``site``: the decoder layer's output (``"residual"``), its self-attention weights
  (``"attention_weights"``, read only, needs eager attention), the mask its self-attention
  applies (``"attention_mask"``: [batch, 1, queries, keys], additive float, 0 attends and -inf
  does not, whatever the kernel: edited in the kernel's reading twin,
  :mod:`studio.engine.attention_reads`) or the input of its self-attention's
  output projection ``o_proj`` (``"attention_output"``, read only: every head's output
  concatenated, [batch, seq, heads * head_dim]) or what its attention function computes the
  weights from (``"attention_inputs"``, read only: an
  :class:`~studio.engine.attention_reads.AttentionInputs` of post-rotary queries, keys, mask
  and scale, read through the model's own kernel, which keeps running) or which positions the
  layers from ``layer`` on compute (``"kept_positions"``, prompt phase only, ``rows`` required:
  ``fn`` receives those rows' states entering ``layer`` and returns each row's kept positions,
  ascending, [rows, K]; the other positions are removed from those rows there, their cache
  entries zero, so later steps must mask them: :mod:`studio.engine.pruning`);
- ``layer``: which decoder layer;
- ``phase``: the prompt pass (the first forward of a generation, or every pass of a plain
  forward), the generated steps, or both;
- ``positions``: in the prompt pass, every position, the image tokens, the positions after
  each row's last image token (``"after_image"``; left padding sits before the image, so it
  is never marked), or an explicit ``[batch, seq]`` boolean mask; generated steps always
  cover their one new position;
- ``rows``: which batch rows (default all), e.g. a contrastive batch's amateur rows.

``fn`` receives the selected value (rows already taken) and returns the new value, or None to
leave it unchanged (a read). Outside the chosen positions the original value is kept exactly
(``torch.where``), so an edit that changes nothing is bit-identical to no edit.

The hooks live inside :func:`intervene` only (request-scoped, removed in ``finally`` on
success, error or cancel; see :mod:`studio.engine.hooks`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from studio.engine.attention_reads import AttentionInputs, MaskEdit, Sink, reading
from studio.engine.errors import InputError, StudioError
from studio.engine.hooks import HookSpec, output_tensor, scoped_hooks
from studio.engine.pruning import Pruning, pruned

Site = Literal["residual", "attention_weights", "attention_mask", "attention_output", "attention_inputs",
               "kept_positions"]
Phase = Literal["prompt", "generated", "both"]
Where = Literal["all", "image", "after_image"] | torch.Tensor
Edit = Callable[[Any], torch.Tensor | None]  # a tensor; an AttentionInputs at the attention_inputs site
SITES: tuple[str, ...] = ("residual", "attention_weights", "attention_mask", "attention_output", "attention_inputs",
                          "kept_positions")
PHASES: tuple[str, ...] = ("prompt", "generated", "both")
NAMED_POSITIONS: tuple[str, ...] = ("all", "image", "after_image")


@dataclass(frozen=True)
class Intervention:
    """Read or edit ``site`` of decoder ``layer`` at ``positions`` of ``rows``, in ``phase``."""

    site: Site
    layer: int
    fn: Edit
    phase: Phase = "both"
    positions: Where = "all"
    rows: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.site not in SITES:
            raise InputError(f"intervention site must be one of {', '.join(SITES)}; got {self.site!r}")
        if self.phase not in PHASES:
            raise InputError(f"intervention phase must be one of {', '.join(PHASES)}; got {self.phase!r}")
        if isinstance(self.positions, str) and self.positions not in NAMED_POSITIONS:
            raise InputError(f"positions must be a [batch, seq] mask or one of {', '.join(NAMED_POSITIONS)}; "
                             f"got {self.positions!r}")
        if not isinstance(self.layer, int) or self.layer < 0:
            raise InputError(f"intervention layer must be a non-negative integer; got {self.layer!r}")
        if self.site == "kept_positions" and (self.phase != "prompt" or not self.rows or self.positions != "all"):
            raise InputError("kept_positions applies in the prompt phase to given rows, at every position")

    def applies(self, prompt_pass: bool) -> bool:
        return self.phase == "both" or (self.phase == "prompt") == prompt_pass


def read(site: Site, layer: int, sink: Callable[[torch.Tensor], None] | Sink, **where) -> Intervention:
    """An intervention that only hands the value to ``sink`` (a capture)."""
    def keep(value) -> None:
        sink(value)
        return None
    return Intervention(site, layer, keep, **where)


def position_mask(where: Where, input_ids: torch.Tensor, image_token_id: int | None) -> torch.Tensor | None:
    """``where`` as a [batch, seq] boolean mask over ``input_ids`` (None: every position)."""
    if isinstance(where, torch.Tensor):
        if where.shape != input_ids.shape:
            raise StudioError(f"an intervention's position mask is {tuple(where.shape)} but the prompt is "
                              f"{tuple(input_ids.shape)}")
        return where.to(device=input_ids.device, dtype=torch.bool)
    if where == "all":
        return None
    if image_token_id is None:
        raise InputError(f"positions {where!r} need the model's image token id")
    is_image = input_ids == image_token_id
    if where == "image":
        return is_image
    index = torch.arange(input_ids.shape[1], device=input_ids.device)
    last = torch.where(is_image, index, torch.full_like(input_ids, -1)).max(dim=1).values
    return index[None] > last[:, None]


@dataclass
class _Request:
    """What the hooks of one :func:`intervene` block share: the pass count and the prompt ids."""

    generating: bool
    image_token_id: int | None
    passes: int = 0
    input_ids: torch.Tensor | None = None
    masks: dict = field(default_factory=dict)

    @property
    def prompt_pass(self) -> bool:
        return not self.generating or self.passes == 1

    def mask(self, intervention: Intervention) -> torch.Tensor | None:
        if not self.prompt_pass or self.input_ids is None:
            return None
        key = id(intervention)
        if key not in self.masks:
            self.masks[key] = position_mask(intervention.positions, self.input_ids, self.image_token_id)
        return self.masks[key]


def _edit(intervention: Intervention, value: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
    """The new value of the whole tensor, or None when unchanged."""
    rows = list(intervention.rows) if intervention.rows is not None else None
    selected = value if rows is None else value[rows]
    new = intervention.fn(selected)
    if new is None:
        return None
    if mask is not None:
        mask = mask if rows is None else mask[rows]
        new = torch.where(mask.to(new.device)[..., None], new, selected)
    if rows is None:
        return new
    out = value.clone()
    out[rows] = new
    return out


def _residual_hook(request: _Request, intervention: Intervention):
    def hook(module: nn.Module, args: tuple, output: object) -> object:
        if not intervention.applies(request.prompt_pass):
            return None
        new = _edit(intervention, output_tensor(output), request.mask(intervention))
        if new is None:
            return None
        return (new, *output[1:]) if isinstance(output, tuple) else new
    return hook


def _weights_hook(request: _Request, intervention: Intervention):
    def hook(module: nn.Module, args: tuple, output: object) -> None:
        if not intervention.applies(request.prompt_pass):
            return None
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if weights is None:
            raise StudioError("attention weights were not computed: this read needs eager attention")
        _edit(intervention, weights, None)
        return None
    return hook


def _mask_edit(request: _Request, intervention: Intervention) -> MaskEdit:
    def edit(inputs: AttentionInputs, mask: torch.Tensor) -> torch.Tensor | None:
        if not intervention.applies(request.prompt_pass):
            return None
        return _edit(intervention, mask, None)
    return edit


def _projection_input_hook(request: _Request, intervention: Intervention):
    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        if not intervention.applies(request.prompt_pass):
            return None
        value = args[0] if args else kwargs["input"]
        if _edit(intervention, value, None) is not None:
            raise StudioError("the attention_output site is read only: its fn must return None")
        return None
    return hook


def output_projection(attention: nn.Module) -> nn.Module:
    """The output projection (``o_proj``) of one self-attention module from the adapter."""
    projection = getattr(attention, "o_proj", None)
    if not isinstance(projection, nn.Module):
        raise StudioError(f"{type(attention).__name__} has no o_proj: the attention_output site needs one")
    return projection


def _count_passes(request: _Request):
    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        request.passes += 1
        ids = kwargs.get("input_ids", args[0] if args and torch.is_tensor(args[0]) else None)
        if request.prompt_pass and ids is not None:
            request.input_ids, request.masks = ids, {}
        return None
    return hook


def _inputs_sink(request: _Request, intervention: Intervention) -> Sink:
    def sink(inputs: AttentionInputs) -> None:
        if not intervention.applies(request.prompt_pass):
            return
        selected = inputs if intervention.rows is None else inputs.rows(list(intervention.rows))
        if intervention.fn(selected) is not None:
            raise StudioError("the attention_inputs site is read only: its fn must return None")
    return sink


_HOOKS = {"residual": ("forward", _residual_hook), "attention_weights": ("forward", _weights_hook),
          "attention_output": ("pre", _projection_input_hook)}


@contextmanager
def intervene(model: nn.Module, layers: Sequence[nn.Module] | nn.ModuleList, attention: Sequence[nn.Module],
              interventions: Sequence[Intervention], generating: bool = False,
              image_token_id: int | None = None) -> Iterator[None]:
    """Apply ``interventions`` to every forward of ``model`` inside the block. With
    ``generating``, the first forward is the prompt pass and later ones are generated steps;
    otherwise every forward is a prompt pass. ``layers`` / ``attention``: the decoder layers and
    their self-attention modules (from the family adapter)."""
    if not interventions:
        yield
        return
    request = _Request(generating, image_token_id)
    specs = [HookSpec(model, _count_passes(request), "pre")]
    sinks: dict[nn.Module, list[Sink]] = {}
    edits: dict[nn.Module, list[MaskEdit]] = {}
    removal = _removal(request, interventions, layers)
    for item in interventions:
        if item.site == "kept_positions":
            continue
        modules = layers if item.site == "residual" else attention
        if item.layer >= len(modules):
            raise InputError(f"layer {item.layer} is out of range: choose 0..{len(modules) - 1}")
        if item.site == "attention_inputs":
            sinks.setdefault(modules[item.layer], []).append(_inputs_sink(request, item))
            continue
        if item.site == "attention_mask":
            edits.setdefault(modules[item.layer], []).append(_mask_edit(request, item))
            continue
        kind, make = _HOOKS[item.site]
        module = output_projection(modules[item.layer]) if item.site == "attention_output" else modules[item.layer]
        specs.append(HookSpec(module, make(request, item), kind))  # type: ignore[arg-type]
    reads = reading(model, sinks, edits) if sinks or edits else nullcontext()  # type: ignore[arg-type]
    with scoped_hooks(specs), reads, (pruned(list(layers)[removal[0]:], removal[1]) if removal else nullcontext()):
        yield


def _removal(request: _Request, interventions: Sequence[Intervention],
             layers: Sequence[nn.Module] | nn.ModuleList) -> tuple[int, Pruning] | None:
    """The first layer and the :class:`~studio.engine.pruning.Pruning` of a ``kept_positions``
    intervention (at most one), after checking that nothing else edits or reads the attention of
    the layers it prunes in the prompt pass (a pruned layer runs its attention twice, on parts of
    the batch, where a row index would point elsewhere)."""
    removals = [i for i in interventions if i.site == "kept_positions"]
    if not removals:
        return None
    if len(removals) > 1:
        raise InputError("one kept_positions intervention per request")
    item = removals[0]
    if item.layer >= len(layers):
        raise InputError(f"layer {item.layer} is out of range: choose 0..{len(layers) - 1}")
    clash = [i for i in interventions if i.site not in ("residual", "kept_positions") and i.layer >= item.layer
             and i.applies(prompt_pass=True)]
    if clash:
        raise InputError(f"{clash[0].site} at layer {clash[0].layer} cannot act in the prompt pass of layers "
                         f"whose positions are removed (from layer {item.layer})")
    rows = item.rows or ()
    return item.layer, Pruning(rows, item.fn, lambda: item.applies(request.prompt_pass))  # type: ignore[arg-type]


__all__ = ["Edit", "Intervention", "Phase", "Site", "Where", "intervene", "output_projection", "position_mask",
           "read"]
