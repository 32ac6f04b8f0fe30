"""Decoding strategies: the plug-in point where decoding-time methods change generation.

A strategy decides how ``ModelSession.generate`` turns the model's next-token logits into
the next token. Greedy and sampling are strategies (:mod:`studio.decoding.base`);
contrastive mitigations live one module each (:mod:`studio.decoding.vcd`,
:mod:`studio.decoding.sid`, :mod:`studio.decoding.icd`) on the shared machinery of
:mod:`studio.decoding.contrastive`. All run on stock ``transformers`` generation through
its documented extension points (batched inputs and a logits processor), not a patched sampler.
"""
from __future__ import annotations

from studio.decoding.base import DecodingStrategy, Greedy, Sampling
from studio.errors import InputError

STRATEGIES: dict[str, type[DecodingStrategy]] = {"greedy": Greedy, "sampling": Sampling}


def register(cls: type[DecodingStrategy]) -> type[DecodingStrategy]:
    """Class decorator adding a strategy to :data:`STRATEGIES` under its ``name``."""
    STRATEGIES[cls.name] = cls
    return cls


def strategy_by_name(name: str, **params) -> DecodingStrategy:
    """A strategy from its registered name and parameters; a clear error for unknown names."""
    _load_builtins()
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise InputError(f"unknown decoding method {name!r}; choose one of {', '.join(STRATEGIES)}") from None
    return cls(**params)


def _load_builtins() -> None:
    from studio.decoding import icd, sid, vcd  # noqa: F401  (registration side effect)


__all__ = ["DecodingStrategy", "Greedy", "STRATEGIES", "Sampling", "register", "strategy_by_name"]
