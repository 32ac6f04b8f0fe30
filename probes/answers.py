"""Probes that change the answer: a decoding method, steering, feature clamping.

Each returns an :class:`AnswerResult`: the answer the intervention produced next to the
baseline answer (greedy, unsteered, unclamped) for the same request, so a run exported from
the Mitigate, Steer or Concepts tab re-runs and compares like any other probe. Steering and
clamping read a file fitted to one model (directions, a dictionary); an empty path means
the one shipped in ``studio/assets/`` for the embedded model.
"""
from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

from probes.base import Probe, ProbeParams, ProbeRequest, ProbeResult
from studio.engine.assets import ASSETS
from studio.engine.errors import InputError


@dataclass
class AnswerResult(ProbeResult):
    """``answer_ids`` [T] and ``baseline_ids`` [T0] int64: the intervened and the baseline answer."""

    prompt: str
    setting: str
    text: str
    baseline_text: str
    answer_ids: np.ndarray
    baseline_ids: np.ndarray
    tokens: list[str] = field(default_factory=list)
    baseline_tokens: list[str] = field(default_factory=list)


@dataclass
class DecodeResult(AnswerResult):
    """Adds ``probs`` [T] float32: each chosen token's probability under the distribution that chose it
    (the method's final scores, after sampling warpers), and ``expert_probs`` [T] float32: the
    model's own probability of it (equal to ``probs`` for greedy)."""

    probs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    expert_probs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    probe = "decode"


@dataclass
class SteerResult(AnswerResult):
    probe = "steer"


@dataclass
class ClampResult(AnswerResult):
    probe = "clamp"


def _ids(ids: list[int]) -> np.ndarray:
    return np.asarray(ids, dtype=np.int64)


def _answer(session, ids: list[int]) -> tuple[str, list[str]]:
    return session.decode_answer(ids), [session.decode_token(i) for i in ids]


def fit_reference(folder: str | Path | None, kind: str) -> str:
    """How a request names a fitted folder: "" for the shipped ``studio/assets/<kind>``, else its absolute path."""
    if not folder:
        return ""
    path = Path(folder).resolve()
    return "" if path == (ASSETS / kind).resolve() else str(path)


_FITTED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_FITTED_LOCK = threading.Lock()


def fitted(session, kind: str, folder: str | Path, loader):
    """A fitted file for this session (loaded and checked once, then reused by the probes and the
    app's tabs alike); a failed load is not cached."""
    key = (kind, str(Path(folder).resolve()))
    with _FITTED_LOCK:
        cache = _FITTED.setdefault(session, {})
        if key not in cache:
            cache[key] = loader(folder, session)
        return cache[key]


class AnswerProbe(Probe):
    """Shared logic: the baseline greedy answer and the result assembly."""

    result_class: ClassVar[type[AnswerResult]] = AnswerResult

    def result(self, session, prepared, max_new_tokens: int, setting: str, ids: list[int], **extra) -> AnswerResult:
        baseline = [t.id for t in session.generate(prepared, max_new_tokens=max_new_tokens).tokens]
        text, tokens = _answer(session, ids)
        base_text, base_tokens = _answer(session, baseline)
        return self.result_class(prompt=prepared.prompt, setting=setting, text=text, baseline_text=base_text,
                                 answer_ids=_ids(ids), baseline_ids=_ids(baseline), tokens=tokens,
                                 baseline_tokens=base_tokens, **extra)

    def run(self, session, request: ProbeRequest, params: ProbeParams) -> AnswerResult:
        return self.answer(session, session.prepare(request.image, request.prompt), request.max_new_tokens, params)

    def answer(self, session, prepared, max_new_tokens: int, params) -> AnswerResult:
        raise NotImplementedError


@dataclass(frozen=True)
class DecodeParams(ProbeParams):
    """A decoding method by name (greedy, sampling, vcd, sid, icd) and its parameters
    (for example ``{"alpha": 1.0, "noise_step": 500}``); unknown names are an error."""

    method: str = "greedy"
    settings: dict = field(default_factory=dict)

    def __post_init__(self):
        from studio.decoding import strategy_by_name
        strategy_by_name(self.method, **self.settings)


class Decode(AnswerProbe):
    name = "decode"
    description = "answer with a decoding method (greedy, VCD, SID, ICD) next to the greedy answer"
    params_class = DecodeParams
    result_class = DecodeResult

    def answer(self, session, prepared, max_new_tokens: int, params: DecodeParams) -> AnswerResult:
        from studio.decoding import strategy_by_name
        strategy = strategy_by_name(params.method, **params.settings)
        strategy.check(session)
        generation = session.generate(prepared, max_new_tokens=max_new_tokens, strategy=strategy)
        setting = params.method + "".join(f" {k}={v}" for k, v in sorted(params.settings.items()))
        return self.result(session, prepared, max_new_tokens, setting, [t.id for t in generation.tokens],
                           probs=np.asarray([t.prob for t in generation.tokens], dtype=np.float32),
                           expert_probs=np.asarray([t.prob if t.expert_prob is None else t.expert_prob
                                                    for t in generation.tokens], dtype=np.float32))


@dataclass(frozen=True)
class SteerParams(ProbeParams):
    """Add ``alpha`` × the fit's steering vector (trained, or the mean preference direction) at
    ``layers`` (empty: the fit's own layers); ``directions``: a folder from ``vlm-studio steer
    fit`` (empty: the shipped one)."""

    alpha: float = 0.0
    layers: tuple = ()
    directions: str = ""

    def __post_init__(self):
        from studio.steering.vectors import check_alpha
        check_alpha(self.alpha)


class Steer(AnswerProbe):
    name = "steer"
    description = "answer with the modality-preference steering vector added, next to the unsteered answer"
    params_class = SteerParams
    result_class = SteerResult
    needs_fit = True

    def answer(self, session, prepared, max_new_tokens: int, params: SteerParams) -> AnswerResult:
        from studio.steering.fit import DirectionFit
        fit = fitted(session, "steer", params.directions or ASSETS / "steering", DirectionFit.load)
        layers = [int(x) for x in params.layers] or list(fit.extra.get("layers", [0]))
        steering = fit.steering(layers, params.alpha)
        generation = session.generate(prepared, max_new_tokens, interventions=steering.interventions())
        ids = [t.id for t in generation.tokens]
        return self.result(session, prepared, max_new_tokens, f"alpha {params.alpha:+g} at layers {layers}", ids)


@dataclass(frozen=True)
class ClampParams(ProbeParams):
    """Set dictionary ``feature`` to ``value`` at the image positions (``where`` "image") or
    everywhere ("all"); ``dictionary``: a folder from ``vlm-studio concepts train`` (empty: shipped)."""

    feature: int = 0
    value: float = 10.0
    where: Literal["image", "all"] = "image"
    dictionary: str = ""

    def __post_init__(self):
        if self.where not in ("image", "all"):
            raise InputError(f"clamp where must be 'image' or 'all'; got {self.where!r}")


class Clamp(AnswerProbe):
    name = "clamp"
    description = "answer with one concept-dictionary feature clamped, next to the plain answer"
    params_class = ClampParams
    result_class = ClampResult
    needs_fit = True

    def answer(self, session, prepared, max_new_tokens: int, params: ClampParams) -> AnswerResult:
        from studio.concepts.explore import Dictionary, clamp_generate
        dictionary = fitted(session, "clamp", params.dictionary or ASSETS / "concepts", Dictionary.load)
        ids = clamp_generate(session, dictionary, prepared, int(params.feature), float(params.value),
                             params.where, max_new_tokens)
        setting = f"feature {params.feature} = {params.value:g} at {params.where}"
        return self.result(session, prepared, max_new_tokens, setting, ids)
