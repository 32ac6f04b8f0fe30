"""The strategy interface, and the two plain strategies: greedy and seeded sampling.

A strategy may give ``generate`` a batch of input rows (:meth:`DecodingStrategy.batch`;
row 0 is always the answer being decoded, extra rows are contrast branches that decode in
the same forward pass with their own KV cache) and logits processors that turn each step's
scores into the next-token scores (:meth:`DecodingStrategy.processors`). A strategy with
neither leaves generation exactly as plain ``generate``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

from transformers import LogitsProcessor

from studio.errors import InputError


@dataclass(frozen=True)
class DecodingStrategy:
    """Greedy decoding; the base every strategy extends."""

    name = "greedy"

    @property
    def do_sample(self) -> bool:
        return False

    def generation_kwargs(self) -> dict:
        """Extra keyword arguments for ``model.generate``."""
        return {}

    def check(self, session) -> None:
        """Raise InputError if the parameters do not fit ``session``'s model (before a long run)."""

    def batch(self, session, prepared) -> dict:
        """The input rows to decode for one request; row 0 is the answer (greedy: the prepared
        inputs as they are, so greedy generation is exactly plain ``generate``)."""
        return prepared.inputs

    def rows(self, session, images: list, prompts: list[str]) -> dict:
        """Input rows for many (image, prompt) pairs; the first ``len(prompts)`` rows are the answers."""
        return session.batch_inputs(images, prompts)

    def processors(self, session, prepared) -> list[LogitsProcessor]:
        """Logits processors that implement the strategy for one request (none for greedy)."""
        return []

    def hooks(self, session, inputs: dict):
        """A context manager active while ``inputs`` (the batch rows) are decoded, e.g. request-scoped
        attention changes; it may yield a dict that is added to the trace. None by default."""
        return contextlib.nullcontext({})

    @property
    def seed(self) -> int | None:
        return None


Greedy = DecodingStrategy


@dataclass(frozen=True)
class Sampling(DecodingStrategy):
    """Temperature / nucleus sampling with a fixed seed, so a run can be repeated."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    sample_seed: int = 0
    name = "sampling"

    def __post_init__(self) -> None:
        if not 0 < self.temperature <= 10:
            raise InputError(f"temperature must be in (0, 10]; got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise InputError(f"top_p must be in (0, 1]; got {self.top_p}")
        if self.top_k < 0:
            raise InputError(f"top_k must be >= 0 (0 = off); got {self.top_k}")

    @property
    def do_sample(self) -> bool:
        return True

    @property
    def seed(self) -> int | None:
        return self.sample_seed

    def generation_kwargs(self) -> dict:
        return {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k or None}
