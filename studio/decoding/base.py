"""The strategy interface, and the two plain strategies: greedy and seeded sampling.

A strategy gives ``generate`` a :class:`DecodeBatch` of input rows (the answer rows first;
contrastive methods add amateur rows, :class:`studio.decoding.contrastive.ContrastiveBatch`)
and a :class:`DecodePlan` for that batch: logits processors that turn each step's scores into
the next-token scores, the interventions the rows need (SID's key masking), the attention
implementation they need, and a trace the plan fills while decoding. A strategy with none of
these leaves generation exactly as plain ``generate``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from transformers import LogitsProcessor

from studio.engine.errors import InputError
from studio.interventions import Intervention


@dataclass(frozen=True)
class DecodeBatch:
    """Input rows to decode together; rows ``0..answers-1`` are the answers returned."""

    inputs: dict
    answers: int


@dataclass
class DecodePlan:
    """How one batch is decoded: processors, interventions, the text model's attention
    implementation (None: unchanged) and the trace filled while decoding."""

    processors: list[LogitsProcessor] = field(default_factory=list)
    interventions: list[Intervention] = field(default_factory=list)
    attention: str | None = None
    trace: dict = field(default_factory=dict)


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

    def batch(self, session, prepared) -> DecodeBatch:
        """The rows to decode for one prepared request (greedy: the prepared inputs as they are,
        so greedy generation is exactly plain ``generate``)."""
        return DecodeBatch(prepared.inputs, 1)

    def rows(self, session, images: list, prompts: list[str]) -> DecodeBatch:
        """Rows for many (image, prompt) pairs; the first ``len(prompts)`` rows are the answers."""
        return DecodeBatch(session.batch_inputs(images, prompts), len(prompts))

    def plan(self, session, batch: DecodeBatch) -> DecodePlan:
        """Processors, interventions and trace for decoding ``batch`` (none for greedy)."""
        return DecodePlan()

    @property
    def seed(self) -> int | None:
        return None


Greedy = DecodingStrategy


def check_sampling(temperature: float, top_p: float, top_k: int) -> None:
    """InputError unless temperature is in (0, 10], top_p in (0, 1] and top_k a whole number >= 0."""
    if not (isinstance(temperature, (int, float)) and 0 < temperature <= 10):
        raise InputError(f"temperature must be in (0, 10]; got {temperature}")
    if not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise InputError(f"top_p must be in (0, 1]; got {top_p}")
    if not (isinstance(top_k, int) and top_k >= 0):
        raise InputError(f"top_k must be a whole number >= 0 (0 = off); got {top_k}")


@dataclass(frozen=True)
class Sampling(DecodingStrategy):
    """Temperature / nucleus sampling with a fixed seed, so a run can be repeated."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    sample_seed: int = 0
    name = "sampling"

    def __post_init__(self) -> None:
        check_sampling(self.temperature, self.top_p, self.top_k)

    @property
    def do_sample(self) -> bool:
        return True

    @property
    def seed(self) -> int | None:
        return self.sample_seed

    def generation_kwargs(self) -> dict:
        return {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k or None}
