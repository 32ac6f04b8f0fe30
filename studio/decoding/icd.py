"""ICD: Instruction Contrastive Decoding (Wang et al., "Mitigating Hallucinations in Large
Vision-Language Models with Instruction Contrastive Decoding", Findings of ACL 2024,
arXiv 2403.18715).

The amateur sees the same image under a *disturbance instruction* placed before the question
("You are a confused object detector."), which raises the model's uncertainty in a
language-driven direction; contrasting against it removes that drift. Combination as in VCD.
The amateur rows have prompts of their own: all 2n rows are left-padded into one batch by the
session's processor (a :class:`ContrastiveBatch` with layout "left"), so each amateur's last
position, where its next token is read, lines up with its expert's.
"""
from __future__ import annotations

from dataclasses import dataclass

from studio.decoding import register
from studio.decoding.contrastive import ContrastiveBatch, ContrastiveStrategy
from studio.engine.errors import InputError

DISTURBANCE = "You are a confused object detector."


@register
@dataclass(frozen=True)
class ICD(ContrastiveStrategy):
    """Instruction contrastive decoding with a configurable disturbance instruction."""

    instruction: str = DISTURBANCE
    name = "icd"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.instruction.strip():
            raise InputError("the disturbance instruction is empty")

    def batch(self, session, prepared) -> ContrastiveBatch:
        if prepared.image is None:
            raise InputError("ICD contrasts two prompts about one image: give an image")
        return self.rows(session, [prepared.image], [prepared.prompt])

    def rows(self, session, images: list, prompts: list[str]) -> ContrastiveBatch:
        disturbed = [f"{self.instruction} {p}" for p in prompts]
        return ContrastiveBatch(session.batch_inputs(images + images, prompts + disturbed), len(prompts), "left")
