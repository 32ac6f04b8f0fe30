"""The cached run every probe reads: one greedy answer, with every layer's states read in the
same pass that decoded it (no second forward).

Probes ask :func:`get_run` instead of running the model themselves whenever they can; a run
is cached per (session, image, prompt, max new tokens) in a small LRU, so clicking through
tokens, patches and layers in the app re-uses one pass. ``memo`` keeps what several probes
share (the tracked tokens' lens probabilities), computed by the first that needs it.
"""
from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from probes.base import ProbeRequest
from studio.adapters import TokenMap
from studio.engine.attention_reads import LayerAttention, QueryKeyLog
from studio.engine.images import load_image, pixel_digest
from studio.engine.session import Generation, ModelSession, Prepared

CACHE_SIZE = 8


@dataclass
class Run:
    """A request answered and read in one pass.

    ``answer_logits``: [A, V] float32, the scores that chose each generated token (row ``i`` at
    the position that predicts answer token ``i``);
    ``hidden``: [L, S, d] residual stream after each decoder layer (S = prompt + answer);
    ``attention``: each decoder layer's attention queries and keys from the same pass, from
    which its weights are rebuilt on demand (:meth:`attention_layer`);
    ``answer_positions``: the position of each generated token in the full sequence.
    """

    request: ProbeRequest
    prepared: Prepared
    generation: Generation
    token_map: TokenMap
    answer_logits: torch.Tensor
    hidden: torch.Tensor
    attention: list[QueryKeyLog]
    answer_positions: list[int]
    memo: dict = field(default_factory=dict)

    @property
    def answer_tokens(self) -> list[str]:
        return [t.text for t in self.generation.tokens]

    def attention_layer(self, layer: int) -> LayerAttention:
        """Layer ``layer``'s attention queries, keys and mask over the whole sequence, as the
        generation pass attended with them; ``.weights()`` rebuilds its attention weights."""
        return self.attention[layer].assemble(self.hidden.shape[1])

    def predicting_position(self, answer_index: int) -> int:
        """The position whose output predicts generated token ``answer_index``."""
        return self.answer_positions[answer_index] - 1


class RunCache:
    """A thread-safe LRU of runs for one session."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self.runs: OrderedDict[tuple, Run] = OrderedDict()
        self.lock = threading.Lock()
        self.misses = 0

    def get(self, key: tuple) -> Run | None:
        with self.lock:
            run = self.runs.get(key)
            if run is not None:
                self.runs.move_to_end(key)
            return run

    def put(self, key: tuple, run: Run) -> None:
        with self.lock:
            self.runs[key] = run
            self.runs.move_to_end(key)
            while len(self.runs) > self.size:
                self.runs.popitem(last=False)


_CACHES: "weakref.WeakKeyDictionary[ModelSession, RunCache]" = weakref.WeakKeyDictionary()


def cache_for(session: ModelSession) -> RunCache:
    return _CACHES.setdefault(session, RunCache())


def request_key(request: ProbeRequest) -> tuple:
    """A cache key: the image's pixels (hashed), the prompt and the answer length."""
    digest = "no-image"
    if request.image is not None:
        digest = pixel_digest(load_image(request.image))
    return (digest, request.prompt.strip(), request.max_new_tokens)


def get_run(session: ModelSession, request: ProbeRequest) -> Run:
    """The cached run for ``request``, computing it on first use."""
    cache = cache_for(session)
    key = request_key(request)
    run = cache.get(key)
    if run is None:
        cache.misses += 1
        run = compute_run(session, request)
        cache.put(key, run)
    return run


def compute_run(session: ModelSession, request: ProbeRequest) -> Run:
    prepared = session.prepare(request.image, request.prompt)
    read = session.read_generation(prepared, request.max_new_tokens)
    generation = read.generation
    answer_ids = [t.id for t in generation.tokens]
    start = prepared.length
    token_map = TokenMap(input_ids=prepared.token_map.input_ids + answer_ids,
                         tokens=prepared.token_map.tokens + [t.text for t in generation.tokens],
                         image=dict(prepared.token_map.image), grids=list(prepared.token_map.grids),
                         image_size=prepared.token_map.image_size)
    return Run(request=request, prepared=prepared, generation=generation, token_map=token_map,
               answer_logits=read.answer_logits, hidden=read.hidden, attention=read.attention,
               answer_positions=list(range(start, start + len(answer_ids))))
