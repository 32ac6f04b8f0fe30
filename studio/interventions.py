"""Interventions on the residual stream (steering, feature clamping) as nnsight traces.

The session's model is wrapped once in ``nnsight``'s ``TransformersModel`` (task
"image-text-to-text"); each request opens its own trace, so an edit exists only inside the
``with`` block that made it and no hook outlives the request. The same trace code can run on
NDIF with ``remote=True`` for models too large for one machine.

An *edit* maps a decoder layer's output hidden states [batch, seq, d] to new ones. Edits are
applied at every position of the prompt and at every generated step. nnsight's interleaver is
not thread-safe, so every trace holds the session lock (which every other model call takes).
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch

from studio.errors import InputError

Edit = Callable[[torch.Tensor], torch.Tensor]


def nnsight_model(session):
    """The session's model wrapped for nnsight (built once, then reused)."""
    with session.lock:
        wrapped = getattr(session, "_nnsight", None)
        if wrapped is None:
            from nnsight.modeling.transformers import TransformersModel
            wrapped = TransformersModel(session.model, task="image-text-to-text",
                                        processor=session.processor, tokenizer=session.tokenizer)
            session._nnsight = wrapped
        return wrapped


def _layer_envoys(session, wrapped, layers: list[int]) -> list:
    modules = session.adapter.decoder_layers()
    for layer in layers:
        if not 0 <= layer < len(modules):
            raise InputError(f"layer {layer} is out of range: choose 0..{len(modules) - 1}")
    names = {id(m): n for n, m in session.model.named_modules()}
    return [wrapped.get(names[id(modules[layer])]) for layer in layers]


def generate_with_edits(session, inputs: dict, edits: dict[int, Edit], max_new_tokens: int,
                        remote: bool = False) -> list[list[int]]:
    """Greedy generation of every row of ``inputs`` (a left-padded batch is fine) with ``edits``
    (layer -> edit) applied at every step; each row's new token ids up to its end token."""
    layers = sorted(edits)
    wrapped = nnsight_model(session)
    envoys = _layer_envoys(session, wrapped, layers)
    prompt_length = inputs["input_ids"].shape[1]
    with session.lock, torch.inference_mode(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*was never reached")
        with wrapped.generate(max_new_tokens=max_new_tokens, do_sample=False, remote=remote,
                              eos_token_id=session.eos_ids, pad_token_id=session.tokenizer.pad_token_id) as tracer:
            with tracer.invoke(**inputs):
                for _ in tracer.all():
                    for layer, envoy in zip(layers, envoys):
                        envoy.output = edits[layer](envoy.output)
            with tracer.invoke():
                ids = tracer.result.save()
    return [_until_end(row, session.eos_ids) for row in ids[:, prompt_length:].tolist()]


def _until_end(row: list[int], eos: list[int]) -> list[int]:
    return next((row[:i] for i, t in enumerate(row) if t in eos), row)


def answer_with_edits(session, images: list, prompts: list[str], max_new_tokens: int,
                      edits: dict[int, Edit]) -> list[str]:
    """Answers for many (image, prompt) pairs generated together with ``edits`` (for evaluation)."""
    rows = generate_with_edits(session, session.batch_inputs(images, prompts), edits, max_new_tokens)
    return [session.decode_answer(r) for r in rows]


def forward_with_edits(session, inputs: dict, edits: dict[int, Edit], remote: bool = False) -> torch.Tensor:
    """One forward pass with ``edits`` applied; the logits [seq, vocab] of batch row 0."""
    layers = sorted(edits)
    wrapped = nnsight_model(session)
    envoys = _layer_envoys(session, wrapped, layers)
    with session.lock, torch.inference_mode():
        with wrapped.trace(**inputs, remote=remote) as tracer:
            for layer, envoy in zip(layers, envoys):
                envoy.output = edits[layer](envoy.output)
            logits = tracer.result.logits.save()
    return logits[0].float()
