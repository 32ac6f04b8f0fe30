"""Shared machinery of contrastive decoding: an expert row, an amateur row, one contrast.

Every step, with expert logits l and amateur logits l' at the last position:

    d = (1 + alpha) * l - alpha * l'                      (Leng et al. 2024, eq. 3)
    d[v] = -inf  where  p_expert(v) < beta * max p_expert  (adaptive plausibility constraint)

computed on raw logits as the VCD reference code does (log-softmax would shift each row by a
constant and pick the same tokens). The amateur decodes as a second row of the same batch,
so both branches run in one forward per step, each with its own KV cache rows; the processor
returns the contrast for every row, so each amateur row takes its expert's next token. The
row protocol is explicit in :class:`ContrastiveBatch`: with n requests in one batch, rows
0..n-1 are the experts and rows n..2n-1 their amateurs (amateur n+i contrasts expert i).

alpha = 0 leaves d equal to the expert logits with only implausible tokens masked, which
never masks the arg-max: greedy contrastive decoding at alpha = 0 is greedy decoding.

Greedy or sampled. The reference code of VCD and ICD samples from d (their patched sampler:
the contrast, then the temperature / top-k / top-p warpers, softmax, multinomial); ``sample``
does that, seeded by ``sample_seed``. Generation's own sampler would draw each row on its
own, so an amateur could take another token than its expert; instead the processor draws one
token per pair from the warped contrast and returns scores that leave only that token, for
both rows. The distribution each token was drawn from stays in the trace (``chosen``), which
is what the studio reports its probability under.

Presets (:data:`ContrastiveStrategy.PRESETS`, ``preset=`` in :func:`studio.decoding.strategy_by_name`):
``paper`` and ``reference-code`` settings per method, each difference named in the method's
module docstring and the README.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal, cast

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from studio.decoding.base import DecodeBatch, DecodePlan, DecodingStrategy, check_sampling
from studio.engine.errors import InputError

MAX_ALPHA = 10.0


def contrast(expert: torch.Tensor, amateur: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """Contrastive scores from expert and amateur logits [..., V], with the plausibility mask."""
    expert, amateur = expert.float(), amateur.float()
    logp = torch.log_softmax(expert, dim=-1)
    cutoff = logp.max(dim=-1, keepdim=True).values + (math.log(beta) if beta > 0 else -math.inf)
    scores = (1 + alpha) * expert - alpha * amateur
    return scores.masked_fill(logp < cutoff, -math.inf)


@dataclass(frozen=True)
class ContrastiveBatch(DecodeBatch):
    """Expert rows ``0..n-1`` then amateur rows ``n..2n-1``, amateur ``n + i`` contrasting
    expert ``i`` (``answers`` = n). ``layout`` says how the rows line up: "shared" when every
    amateur has its expert's token layout (VCD, SID: only pixels or attention differ), "left"
    when amateurs have prompts of their own and all 2n rows are left-padded to one length, so
    the last position of every row is its next-token position (ICD)."""

    layout: Literal["shared", "left"] = "shared"

    @property
    def experts(self) -> range:
        return range(self.answers)

    @property
    def amateurs(self) -> range:
        return range(self.answers, 2 * self.answers)

    def __post_init__(self) -> None:
        if self.inputs["input_ids"].shape[0] != 2 * self.answers:
            raise InputError(f"a contrastive batch of {self.answers} experts needs {2 * self.answers} rows; "
                             f"got {self.inputs['input_ids'].shape[0]}")


class ContrastSampler:
    """Draws one token per expert row from the warped contrast (temperature, then top-k, then top-p,
    as ``generate`` orders its warpers), with its own seeded generator."""

    def __init__(self, temperature: float, top_p: float, top_k: int, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self.warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)])
        if top_k:
            self.warpers.append(TopKLogitsWarper(top_k))
        if top_p < 1:
            self.warpers.append(TopPLogitsWarper(top_p))

    def draw(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(token per row [n], the warped scores [n, V] they were drawn from)."""
        warped = self.warpers(input_ids, scores)
        probs = torch.softmax(warped.float(), dim=-1).cpu()
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(1).to(scores.device), warped


class ContrastProcessor(LogitsProcessor):
    """Each expert row and its amateur (``batch``'s rows) get the contrast of the two, or with a
    ``sampler`` scores that leave only the token drawn from it. Keeps a trace of each step's
    expert, amateur and contrast scores of the first pair, and the scores its token was chosen
    from (``chosen``: the contrast, or the warped contrast when sampling)."""

    def __init__(self, batch: ContrastiveBatch, alpha: float, beta: float, sampler: ContrastSampler | None = None) -> None:
        self.n = batch.answers  # experts are rows 0..n-1, their amateurs n..2n-1 (ContrastiveBatch)
        self.alpha, self.beta, self.sampler = alpha, beta, sampler
        self.trace: dict[str, list] = {"expert": [], "amateur": [], "contrast": [], "chosen": []}

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        expert, amateur = scores[:self.n], scores[self.n:]
        mixed = contrast(expert, amateur, self.alpha, self.beta)
        out = chosen = mixed
        if self.sampler is not None:
            tokens, chosen = self.sampler.draw(cast(torch.LongTensor, input_ids[:self.n]), mixed)
            out = torch.full_like(mixed, -math.inf).scatter(1, tokens[:, None], 0.0)
        self.trace["expert"].append(expert[0].detach().float().cpu())
        self.trace["amateur"].append(amateur[0].detach().float().cpu())
        self.trace["contrast"].append(mixed[0].detach().cpu())
        self.trace["chosen"].append(chosen[0].detach().float().cpu())
        return cast(torch.FloatTensor, torch.cat([out, out]).to(scores.dtype))


@dataclass(frozen=True)
class ContrastiveStrategy(DecodingStrategy):
    """Base of contrastive methods: validates alpha/beta and builds the :class:`ContrastiveBatch`.

    Subclasses give the amateur rows (:meth:`amateurs`) and may extend the plan.
    """

    alpha: float = 1.0
    beta: float = 0.1
    sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    sample_seed: int = 0
    PRESETS: ClassVar[dict[str, dict]] = {}

    def __post_init__(self) -> None:
        if not (isinstance(self.alpha, (int, float)) and 0 <= self.alpha <= MAX_ALPHA):
            raise InputError(f"alpha must be between 0 and {MAX_ALPHA}; got {self.alpha}")
        if not (isinstance(self.beta, (int, float)) and 0 <= self.beta <= 1):
            raise InputError(f"beta must be between 0 and 1; got {self.beta}")
        if not isinstance(self.sample, bool):
            raise InputError(f"sample must be true or false; got {self.sample!r}")
        check_sampling(self.temperature, self.top_p, self.top_k)

    def sampler(self) -> ContrastSampler | None:
        """The seeded sampler of one request when ``sample``, else None (greedy on the contrast)."""
        if not self.sample:
            return None
        return ContrastSampler(self.temperature, self.top_p, self.top_k, self.sample_seed)

    def amateurs(self, session, experts: dict, images: list, prompts: list[str]) -> dict:
        """Amateur rows for expert rows ``experts``, with the same token layout."""
        raise NotImplementedError

    def batch(self, session, prepared) -> ContrastiveBatch:
        images, prompts = [prepared.image], [prepared.prompt]
        return stack_rows(prepared.inputs, self.amateurs(session, prepared.inputs, images, prompts))

    def rows(self, session, images: list, prompts: list[str]) -> ContrastiveBatch:
        experts = session.batch_inputs(images, prompts)
        return stack_rows(experts, self.amateurs(session, experts, images, prompts))

    def plan(self, session, batch: DecodeBatch) -> DecodePlan:
        processor = ContrastProcessor(as_contrastive(batch), self.alpha, self.beta, self.sampler())
        return DecodePlan(processors=[processor], trace=processor.trace)


def as_contrastive(batch: DecodeBatch) -> ContrastiveBatch:
    if not isinstance(batch, ContrastiveBatch):
        raise TypeError("a contrastive strategy decodes a ContrastiveBatch")
    return batch


def stack_rows(expert: dict, amateur: dict) -> ContrastiveBatch:
    """Expert rows then amateur rows (same token layout) as one :class:`ContrastiveBatch`.

    Tensors with a batch dimension are concatenated; ``pixel_values`` without one (Qwen2-VL's
    [patches, features]) concatenate along their first dimension too, with ``image_grid_thw``
    listing both images, which is how those processors batch images.
    """
    if expert["input_ids"].shape != amateur["input_ids"].shape:
        raise InputError("expert and amateur inputs must have the same token layout to share a batch")
    inputs = {k: torch.cat([v, amateur[k]], dim=0) if torch.is_tensor(v) else v for k, v in expert.items()}
    return ContrastiveBatch(inputs, expert["input_ids"].shape[0], "shared")
