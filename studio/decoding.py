"""Decoding strategies: the plug-in point where decoding-time methods change generation.

A strategy decides how ``ModelSession.generate`` turns the model's next-token logits into
the next token. Greedy and sampling are strategies; mitigations (contrastive decoding and
the like) subclass :class:`DecodingStrategy` and return a ``transformers`` logits processor
from :meth:`DecodingStrategy.processors` that may run extra branches through the session.
This is stock ``transformers`` generation (a documented extension point), not a patched
sampler. A strategy with no processors leaves generation exactly as plain ``generate``.
"""
from __future__ import annotations

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

    def processors(self, session, prepared) -> list[LogitsProcessor]:
        """Logits processors that implement the strategy for one request (none for greedy)."""
        return []

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


STRATEGIES: dict[str, type[DecodingStrategy]] = {"greedy": Greedy, "sampling": Sampling}


def strategy_by_name(name: str, **params) -> DecodingStrategy:
    """A strategy from its registered name and parameters; a clear error for unknown names."""
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise InputError(f"unknown decoding method {name!r}; choose one of {', '.join(STRATEGIES)}") from None
    return cls(**params)
