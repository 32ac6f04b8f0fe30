"""Encoding an image once per request when several passes see the same pixels.

Integrated gradients on the prompt's embeddings runs the model many times on one image: every
pass would encode the same pixels again through the vision tower, which on a many-tile model
is most of a forward (SmolVLM-256M: 17 tiles of 512 pixels). Every family's model reaches its
vision tower through ``get_image_features``; :func:`image_features_reused` shadows that method
on the model's modules for one block with a version that keeps each pixel tensor's features
(by identity: the tensor is held, so its identity cannot pass to another) and returns them
again. The cached features carry no gradient to the pixels, so the block is only for passes
whose gradients do not flow into the image; the shadowing is removed in ``finally``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

METHOD = "get_image_features"


def _cached(original: Callable, kept: dict[int, tuple[torch.Tensor, object]]) -> Callable:
    def get_image_features(pixel_values: torch.Tensor, *args, **kwargs):
        entry = kept.get(id(pixel_values))
        if entry is None or entry[0] is not pixel_values or pixel_values.requires_grad:
            entry = (pixel_values, original(pixel_values, *args, **kwargs))
            if not pixel_values.requires_grad:
                kept[id(pixel_values)] = entry
        return entry[1]
    return get_image_features


@contextmanager
def image_features_reused(model: nn.Module) -> Iterator[None]:
    """Within the block, a pixel tensor seen again (the same object, not requiring gradients)
    is not encoded again: its first encoding is returned."""
    kept: dict[int, tuple[torch.Tensor, object]] = {}
    owners = [m for m in model.modules() if callable(getattr(m, METHOD, None))]
    try:
        for owner in owners:
            setattr(owner, METHOD, _cached(getattr(owner, METHOD), kept))
        yield
    finally:
        for owner in owners:
            owner.__dict__.pop(METHOD, None)
