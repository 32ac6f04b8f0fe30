"""ICD: Instruction Contrastive Decoding (Wang et al., "Mitigating Hallucinations in Large
Vision-Language Models with Instruction Contrastive Decoding", Findings of ACL 2024,
arXiv 2403.18715).

The amateur sees the same image under a *disturbance instruction*, which raises the model's
uncertainty in a language-driven direction; contrasting against it removes that drift.
Combination as in VCD. The amateur rows have prompts of their own: all 2n rows are
left-padded into one batch by the session's processor (a :class:`ContrastiveBatch` with
layout "left"), so each amateur's last position, where its next token is read, lines up with
its expert's.

Where the disturbance goes (``placement``):

- "system", as the official code does (p1k0pan/ICD): the amateur's system prompt is replaced
  by "You are a confused objects detector to provide a fuzzy overview or impression of the
  image." (:data:`SYSTEM_DISTURBANCE`); the experts keep the template's default system turn;
- "user", as the paper describes it: the disturbance ("You are a confused object detector.",
  :data:`DISTURBANCE`) is put before the question in the user turn;
- "auto" (default): "system" when the model's chat template writes a system turn, else "user"
  (the embedded world model's template has none).

Presets: ``reference-code`` (system placement, its text, sampling at temperature 1, alpha 1,
beta 0.1, seed 55 as its scripts pass) and ``paper`` (user placement, the paper's text,
sampling, alpha 1, beta 0.1). Departure: the studio's default decodes greedily on the contrast
(``sample=True`` for the published sampler).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from studio.decoding import register
from studio.decoding.contrastive import ContrastiveBatch, ContrastiveStrategy
from studio.engine.errors import InputError

DISTURBANCE = "You are a confused object detector."
SYSTEM_DISTURBANCE = "You are a confused objects detector to provide a fuzzy overview or impression of the image."
PLACEMENTS = ("auto", "system", "user")


@register
@dataclass(frozen=True)
class ICD(ContrastiveStrategy):
    """Instruction contrastive decoding; ``instruction`` None means the placement's published text."""

    instruction: str | None = None
    placement: str = "auto"
    name = "icd"
    PRESETS: ClassVar[dict[str, dict]] = {
        "paper": {"placement": "user", "instruction": DISTURBANCE, "alpha": 1.0, "beta": 0.1, "sample": True},
        "reference-code": {"placement": "system", "instruction": SYSTEM_DISTURBANCE, "alpha": 1.0, "beta": 0.1,
                           "sample": True, "sample_seed": 55},
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.instruction is not None and not str(self.instruction).strip():
            raise InputError("the disturbance instruction is empty")
        if self.placement not in PLACEMENTS:
            raise InputError(f"placement must be one of {', '.join(PLACEMENTS)}; got {self.placement!r}")

    def where(self, session) -> str:
        """Where the disturbance goes for ``session``'s model ("system" or "user")."""
        if self.placement == "auto":
            return "system" if session.has_system_turn else "user"
        if self.placement == "system" and not session.has_system_turn:
            raise InputError("this model's chat template has no system turn: use placement=user (or auto)")
        return self.placement

    def check(self, session) -> None:
        self.where(session)

    def batch(self, session, prepared) -> ContrastiveBatch:
        if prepared.image is None:
            raise InputError("ICD contrasts two prompts about one image: give an image")
        return self.rows(session, [prepared.image], [prepared.prompt])

    def rows(self, session, images: list, prompts: list[str]) -> ContrastiveBatch:
        n = len(prompts)
        if self.where(session) == "system":
            text = self.instruction or SYSTEM_DISTURBANCE
            inputs = session.batch_inputs(images + images, prompts + prompts, systems=[None] * n + [text] * n)
        else:
            text = self.instruction or DISTURBANCE
            inputs = session.batch_inputs(images + images, prompts + [f"{text} {p}" for p in prompts])
        return ContrastiveBatch(inputs, n, "left")
