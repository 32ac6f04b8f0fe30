"""Decoding strategies: the plug-in point where decoding-time methods change generation.

A strategy decides how ``ModelSession.generate`` turns the model's next-token logits into
the next token. Greedy and sampling are strategies (:mod:`studio.decoding.base`);
contrastive mitigations live one module each (:mod:`studio.decoding.vcd`,
:mod:`studio.decoding.sid`, :mod:`studio.decoding.icd`) on the shared machinery of
:mod:`studio.decoding.contrastive`. All run on stock ``transformers`` generation through
its documented extension points (batched inputs and a logits processor), not a patched sampler.
"""
from __future__ import annotations

from dataclasses import fields

from studio.decoding.base import (
    DecodeBatch,
    DecodePlan,
    DecodingStrategy,
    Greedy,
    Sampling,
)
from studio.engine.errors import InputError

STRATEGIES: dict[str, type[DecodingStrategy]] = {"greedy": Greedy, "sampling": Sampling}


def register(cls: type[DecodingStrategy]) -> type[DecodingStrategy]:
    """Class decorator adding a strategy to :data:`STRATEGIES` under its ``name``."""
    STRATEGIES[cls.name] = cls
    return cls


def strategy_by_name(name: str, **params) -> DecodingStrategy:
    """A strategy from its registered name and parameters; a clear error for unknown names.

    ``preset`` (for the contrastive methods: "paper" or "reference-code") starts from that preset's
    parameters; parameters given explicitly override it."""
    _load_builtins()
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise InputError(f"unknown decoding method {name!r}; choose one of {', '.join(STRATEGIES)}") from None
    preset = params.pop("preset", None)
    if preset is not None:
        presets: dict[str, dict] = getattr(cls, "PRESETS", {})
        if preset not in presets:
            raise InputError(f"{name} has no preset {preset!r}; its presets: {', '.join(presets) or 'none'}")
        params = {**presets[preset], **params}
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise InputError(f"{name} has no parameter {', '.join(unknown)}; its parameters: {', '.join(known) or 'none'}")
    return cls(**params)


def parse_settings(settings: list[str]) -> dict[str, dict]:
    """``["sid.layer=3", "vcd.alpha=0.5"]`` -> ``{"sid": {"layer": 3}, "vcd": {"alpha": 0.5}}``."""
    out: dict[str, dict] = {}
    for item in settings:
        key, sep, value = item.partition("=")
        method, dot, param = key.partition(".")
        if not (sep and dot and method and param):
            raise InputError(f"setting {item!r} is not METHOD.PARAM=VALUE (e.g. sid.layer=3)")
        out.setdefault(method, {})[param] = _number(value)
    return out


def _number(text: str) -> bool | int | float | str:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def method_names() -> list[str]:
    """Every registered decoding method's name (the built-in ones loaded), sorted."""
    _load_builtins()
    return sorted(STRATEGIES)


def _load_builtins() -> None:
    from studio.decoding import anchors, icd, sid, vcd  # noqa: F401  (registration side effect)


__all__ = ["STRATEGIES", "DecodeBatch", "DecodePlan", "DecodingStrategy", "Greedy", "Sampling", "method_names",
           "parse_settings", "register",
           "strategy_by_name"]
