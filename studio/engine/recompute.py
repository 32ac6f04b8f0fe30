"""Gradients with less memory: layers' activations recomputed in the backward pass instead of kept.

A pixel gradient runs backward through the vision tower, whose activations over every tile
are the bulk of its memory (SmolVLM-256M's 17 tiles of 512 pixels: about eight times the
weights). transformers' layers know how to checkpoint themselves (``GradientCheckpointingLayer``:
with ``gradient_checkpointing`` set and the layer in training mode, its forward runs under
``torch.utils.checkpoint``); :func:`recomputed` switches that on for the given layers only, for
one block, and restores every flag in ``finally``. Only the layer module itself is put in
training mode, never its children, so dropout and every other submodule stay in eval mode and
the values computed are the same. A decoder layer replayed in the backward pass must not
write a cache (its replay would attend to its own keys twice): call the model with
``use_cache=False`` inside the block.

Layer checkpointing alone still keeps every layer's input over every tile and replays one layer
over every tile at once. A vision tower that encodes each row of its pixel input on its own (one
image, or one tile of it: the adapter's ``view_encoder``) is also run one row at a time, each row
under checkpoint (:func:`rows_recomputed`): the backward pass replays one row, its layers
checkpointed within it, and frees it before the next, so the tower holds one row's layer inputs
and one layer's activations of one row. The price is a third forward of the tower (the row's
replay, then each layer's); rows without layer checkpointing would hold a whole row's
activations (SmolVLM-256M's SigLIP tower, 4 tiles of 512 pixels in float32, measured live:
457 MiB with rows alone, 161 MiB with layers checkpointed within, 401 MiB with layers alone).
:func:`recomputing` combines both for a session call.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, Literal

import torch.utils.checkpoint
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from studio.engine.memory import release_heap

Recompute = Literal["vision", "all"] | None
_CHECKPOINT = functools.partial(torch.utils.checkpoint.checkpoint, use_reentrant=False)


def checkpointable_layers(model: nn.Module, besides: Iterable[nn.Module] = ()) -> list[GradientCheckpointingLayer]:
    """Every layer of ``model`` that can checkpoint itself, except those in ``besides``."""
    skip = {id(m) for m in besides}
    return [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer) and id(m) not in skip]


@contextmanager
def recomputed(layers: list[GradientCheckpointingLayer]) -> Iterator[None]:
    """Within the block, ``layers`` keep only their inputs for the backward pass and recompute
    the rest (the model must be held by one request: the flags are the modules')."""
    saved = [(m, m.gradient_checkpointing, m.training, m.__dict__.get("_gradient_checkpointing_func")) for m in layers]
    try:
        for layer in layers:
            layer.gradient_checkpointing = True
            layer._gradient_checkpointing_func = _CHECKPOINT  # type: ignore[assignment]
            layer.training = True
        yield
    finally:
        for layer, flag, training, func in saved:
            layer.gradient_checkpointing = flag
            layer.training = training
            if func is None:
                layer.__dict__.pop("_gradient_checkpointing_func", None)
            else:
                layer._gradient_checkpointing_func = func


def _row(value: Any, rows: int, i: int) -> Any:
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == rows:
        return value[i:i + 1]
    return value


def _joined(parts: list[Any]) -> Any:
    """The rows' outputs joined along dimension 0: tensors concatenated, the same for each field
    of a ``ModelOutput`` or element of a tuple; anything else must be equal in every row."""
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)
    if isinstance(first, dict):  # transformers' ModelOutput is a dict of its set fields
        return type(first)(**{key: _joined([part[key] for part in parts]) for key in first})
    if isinstance(first, (tuple, list)):
        return type(first)(_joined(list(items)) for items in zip(*parts))
    if any(part != first for part in parts[1:]):
        raise TypeError(f"the rows' outputs differ in a {type(first).__name__} that cannot be joined")
    return first


def _one_row(forward: Callable, args: list, kwargs: dict) -> Any:
    """``forward`` on one row under checkpoint; after its forward, and once its backward has
    reached its pixels, the heap pages it freed go back to the system (glibc keeps freed blocks
    of a few MB in its heap and the next row's rarely fit them: without this the resident memory
    grows by most of a row's activations per row; :mod:`studio.engine.memory`)."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor) and value.requires_grad:
            value.register_hook(_released)
    output = _CHECKPOINT(forward, *args, **kwargs)
    release_heap()
    return output


def _released(grad: torch.Tensor) -> None:
    release_heap()
    return None


@contextmanager
def rows_recomputed(encoder: nn.Module) -> Iterator[None]:
    """Within the block, a call of ``encoder`` whose pixels (more than one row) need gradients
    runs one row of its input at a time, each under checkpoint, and returns the rows' outputs
    joined: the forward keeps only the inputs, the backward replays one row at a time. Every
    tensor argument with as many rows as the pixels is split with them. The encoder must encode
    its rows independently (the adapter's ``view_encoder`` says so)."""
    original = encoder.forward

    def forward(*args, **kwargs):
        pixels = kwargs.get("pixel_values", args[0] if args else None)
        if not (torch.is_grad_enabled() and isinstance(pixels, torch.Tensor) and pixels.requires_grad) \
                or pixels.shape[0] == 1:
            return original(*args, **kwargs)
        rows = pixels.shape[0]
        return _joined([_one_row(original, [_row(a, rows, i) for a in args],
                                 {k: _row(v, rows, i) for k, v in kwargs.items()}) for i in range(rows)])
    encoder.forward = forward
    try:
        yield
    finally:
        encoder.__dict__.pop("forward", None)


@contextmanager
def recomputing(model: nn.Module, mode: Recompute, decoder_layers: Iterable[nn.Module],
                view_encoder: nn.Module | None) -> Iterator[None]:
    """A session call's recomputation: none; the vision tower's ("vision"); or every layer's
    ("all"); a ``view_encoder`` is run row by row as well (:func:`rows_recomputed`)."""
    if mode is None:
        yield
        return
    with recomputed(checkpointable_layers(model, decoder_layers if mode == "vision" else ())), \
            (rows_recomputed(view_encoder) if view_encoder is not None else nullcontext()):
        yield
