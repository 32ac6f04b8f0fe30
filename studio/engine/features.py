"""Encoding an image once per request when several passes see the same pixels.

Integrated gradients on the prompt's embeddings runs the model many times on one image: every
pass would encode the same pixels again through the vision tower, which on a many-tile model
is most of a forward (SmolVLM-256M: 17 tiles of 512 pixels). Every family's model reaches its
vision tower through ``get_image_features``; :func:`image_features_reused` shadows that method
on the model's modules for one block with a version that keeps each pixel tensor's features
(by identity: the tensor is held, so its identity cannot pass to another) and returns them
again. The cached features carry no gradient to the pixels, so the block is only for passes
whose gradients do not flow into the image; the shadowing is removed in ``finally``.

Contrastive decoding puts an amateur row beside each expert row; SID's and ICD's amateurs see
their experts' very pixels, so a batch of 2n rows carries each image twice.
:func:`images_encoded_once` finds that (every image input's second half equal to its first)
and hands ``generate`` the first half's encoding twice as ``mm_encoder_outputs``, transformers'
input for pre-encoded images, so the vision tower runs over n images instead of 2n.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

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


def images_encoded_once(model: nn.Module, inputs: dict) -> dict:
    """``inputs`` for ``model.generate`` with each image encoded once when the batch's second
    half of images repeats its first (every tensor the model's ``get_image_features`` takes
    has two equal halves along its first dimension: rows ``n..2n-1`` see the images of rows
    ``0..n-1``); otherwise ``inputs`` unchanged. Must run where the model may be called
    (without autograd).

    The first half is encoded by the model's own ``get_image_features`` and its per-image
    features (``pooler_output``, and ``deepstack_features`` where a family has them: what a
    forward reads of ``mm_encoder_outputs``) are repeated for the second half; ``pixel_values``
    leaves ``inputs``, the other image inputs stay (``generate`` computes positions from the grids
    and drops them, as when it encodes the images itself). Models
    whose ``forward`` takes no ``mm_encoder_outputs`` keep encoding every row.
    """
    encode = _image_encoder(model)
    if encode is None:
        return inputs
    taken = {k: inputs[k] for k in inspect.signature(encode).parameters if k != "kwargs" and k in inputs}
    if "pixel_values" not in taken or not all(_halves_equal(v) for v in taken.values() if torch.is_tensor(v)):
        return inputs
    half = {k: v[: v.shape[0] // 2] if torch.is_tensor(v) else v for k, v in taken.items()}
    encoded = encode(**half, return_dict=True)
    deep = getattr(encoded, "deepstack_features", None)
    if deep is not None:
        if not all(_per_image(layer) for layer in deep):
            return inputs
        encoded.deepstack_features = [_twice(layer) for layer in deep]
    encoded.pooler_output = _twice(encoded.pooler_output)
    return {**{k: v for k, v in inputs.items() if k != "pixel_values"}, "mm_encoder_outputs": {"image": encoded}}


def _image_encoder(model: nn.Module) -> Callable | None:
    takes_encodings = "mm_encoder_outputs" in inspect.signature(model.forward).parameters
    encode = getattr(getattr(model, "base_model", model), METHOD, None)
    return encode if takes_encodings and callable(encode) else None


def _halves_equal(value: torch.Tensor) -> bool:
    n = value.shape[0] if value.dim() else 1
    return n % 2 == 0 and n > 0 and torch.equal(value[: n // 2], value[n // 2:])


def _per_image(value: Any) -> bool:
    return torch.is_tensor(value) or (isinstance(value, Sequence) and all(torch.is_tensor(v) for v in value))


def _twice(value: Any) -> Any:
    """Per-image features (a tensor stacked along its first dimension, or a sequence of per-image
    tensors) followed by themselves again."""
    return torch.cat([value, value]) if torch.is_tensor(value) else [*value, *value]
