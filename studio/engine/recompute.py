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
"""
from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Literal

import torch.utils.checkpoint
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

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
