"""Relevancy maps (Chefer, Gur & Wolf 2021, "Generic Attention-model Explainability for
Interpreting Bi-Modal and Encoder-Decoder Transformers"), as LVLM-Interpret (Stan et al. 2024,
IntelLabs/lvlm-interpret ``utils_relevancy.py``) applies them to LLaVA's decoder.

For one generated token ``t``, predicted at position ``q`` (the position before it):

1. the target is the token's logit at ``q`` (the reference back-propagates a one-hot on the
   logits); its gradient is taken with respect to every decoder layer's self-attention
   weights ``A_l`` [heads, S, S];
2. per layer, the gradient-weighted attention ``Ā_l = mean_h (∇A_l ⊙ A_l)^+`` (rule 5);
3. relevancy starts as the identity and is propagated through the layers in forward order,
   ``R ← R + Ā_l R`` (rule 6), so ``R = (I + Ā_L) ... (I + Ā_1)``;
4. row ``q`` of ``R`` with the identity removed, divided by its sum (the reference's
   ``handle_residual`` normalisation, eq. 8-9, which LVLM-Interpret applies by default),
   is the token's relevancy over all positions: its image part is the patch heat map, its
   prompt part the prompt-token relevancy.

Only row ``q`` is needed, so it is computed as a row vector from the last layer down
(``v ← v + v Ā_l``), O(L·S²) per token instead of the O(L·S³) matrix products; by
associativity this is the same row (the tests compare it with the forward-order matrix rule).

Cost: one forward pass over prompt + answer (kept for backward, eager attention in the
language model) and one backward pass per explained token, about ``1 + 2 T`` forward passes
for ``T`` tokens (:meth:`RelevancyParams.forward_passes`); memory holds every layer's
attention weights [heads, S, S] and the autograd graph while the backward passes run. On the
embedded model (4 layers, 86 positions) a 14-token caption took a median 0.45 s on a busy
2-core CPU, against 0.06 s for attention rollout.

Departures from the reference code, all deliberate:

- **Teacher-forced pass, current token's gradient on every row.** LVLM-Interpret reads the
  weights of the cached generation steps: for token ``t`` only the newest row (step ``t``)
  carries ``t``'s gradient, and the rows of earlier positions are reused from earlier tokens
  (``privious_cam``), weighted by *their* tokens' gradients. Here one causal pass over prompt
  and answer gives every row the gradient of the token being explained, which is Chefer et
  al.'s rule as published. For the first generated token the two coincide.
- **Gradients without touching the model.** The reference makes the parameters require grad
  and calls ``retain_grad`` on the attention weights inside raw hooks. Here the weights are
  read through the studio's ``attention_weights`` intervention site, the graph is rooted in a
  copy of ``pixel_values`` that requires grad (the parameters stay frozen, nothing is
  accumulated in ``.grad``), and ``torch.autograd.grad`` returns the gradients, which are the
  same numbers. A prompt without an image is refused (``needs_image``).
- **Decoder only.** LVLM-Interpret optionally continues the propagation into the vision
  encoder's own self-attention (its "vit"/"all" maps); this probe stops at the image tokens
  of the decoder (its default "llama" map), which is what the studio's patch grid shows.
- **Per token.** The reference averages maps over the sub-word tokens of a word; here each
  generated token keeps its own row (the embedded model's tokenizer is word-level anyway).
- **A cap on tokens.** By default the first ``max_tokens`` (16) generated tokens are
  explained, keeping the cost near the attribution probe's ~40 forward passes on any model.
- The raw scale of each row (before normalisation) is kept in ``scale``, so the unnormalised
  relevancy is ``relevancy * scale``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from probes.base import Probe, ProbeParams, ProbeRequest, check_range
from probes.layout import LayoutResult, layout_of
from studio.engine.errors import InputError, StudioError
from studio.interventions import read

BACKWARD_PASSES = 2  # one backward pass costs about two forward passes


@dataclass(frozen=True)
class RelevancyParams(ProbeParams):
    """``answer_indices``: the generated tokens to explain (empty: the first ``max_tokens``);
    one backward pass each."""

    answer_indices: tuple[int, ...] = ()
    max_tokens: int = 16

    def __post_init__(self) -> None:
        check_range("max_tokens", self.max_tokens, 1, 10_000)
        for index in self.answer_indices:
            if not isinstance(index, int):
                raise InputError(f"answer_indices must be integers; got {index!r}")
            check_range("answer_indices", index, 0, 10_000)

    def chosen(self, n_answer: int) -> list[int]:
        """The answer indices to explain for an answer of ``n_answer`` tokens."""
        if not self.answer_indices:
            return list(range(min(n_answer, self.max_tokens)))
        bad = [i for i in self.answer_indices if i >= n_answer]
        if bad:
            raise InputError(f"answer_indices {bad} are out of range: the answer has {n_answer} tokens")
        return sorted(set(self.answer_indices))

    def forward_passes(self, n_answer: int) -> int:
        """About how many forward passes the probe costs on an answer of ``n_answer`` tokens."""
        return 1 + BACKWARD_PASSES * len(self.chosen(n_answer))


@dataclass
class RelevancyResult(LayoutResult):
    """Arrays (T explained tokens ``answer_indices``, S positions of prompt + answer):

    - ``relevancy`` [T, S] float32: row ``q`` of ``R`` minus the identity, divided by its sum
      (zero after ``q``: the model is causal); its ``image_positions`` columns are the patch map;
    - ``scale`` [T] float32: that sum (the row's total relevancy before normalisation).
    """

    image_positions: list[int]
    answer_indices: list[int]
    query_positions: list[int]
    relevancy: np.ndarray
    scale: np.ndarray
    probe = "relevancy"


def gradient_weighted(attention: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Rule 5: ``E_h[(∇A ⊙ A)^+]`` of one layer's weights and gradients [heads, S, S] -> [S, S]."""
    return (grad.detach().float() * attention.detach().float()).clamp(min=0).mean(0)


def relevancy_row(layers: list[torch.Tensor], query: int) -> torch.Tensor:
    """Row ``query`` of ``R`` after ``R ← R + Ā_l R`` over ``layers`` (first layer first) from the
    identity, computed right to left as a row vector; [S] on the first layer's device."""
    row = torch.zeros(layers[0].shape[-1], device=layers[0].device)
    row[query] = 1.0
    for mean in reversed(layers):
        row = row.to(mean.device)
        row = row + row @ mean
    return row.to(layers[0].device)


def normalised(row: torch.Tensor, query: int) -> tuple[torch.Tensor, float]:
    """``row`` without its identity entry, divided by its sum (``handle_residual``); and the sum."""
    row = row.clone()
    row[query] -= 1.0
    total = float(row.sum())
    return (row / total if total > 0 else row), total


def _pixel_leaf(inputs: dict) -> torch.Tensor:
    pixels = inputs.get("pixel_values")
    if not torch.is_tensor(pixels) or not pixels.is_floating_point():
        raise StudioError("relevancy roots its gradients in the image: this model's inputs have no floating-point "
                          "pixel_values")
    return pixels.detach().clone().requires_grad_(True)


def explain(session, inputs: dict, queries: list[int], targets: list[int]) -> list[torch.Tensor]:
    """Relevancy rows (unnormalised, [S] each, on CPU) for the logit of ``targets[k]`` at
    ``queries[k]``: one forward with every layer's attention weights read through the
    ``attention_weights`` site, one backward per target. Call inside eager attention."""
    weights: dict[int, torch.Tensor] = {}
    reads = [read("attention_weights", layer, functools.partial(weights.__setitem__, layer))
             for layer in range(session.n_layers)]

    def body() -> list[torch.Tensor]:
        logits = session.model(**{**inputs, "pixel_values": _pixel_leaf(inputs)}).logits[0]
        layers = [weights[layer] for layer in range(session.n_layers)]
        if not all(w.requires_grad for w in layers):
            raise StudioError("the attention weights do not depend on the image: relevancy cannot be computed")
        rows = []
        for k, (query, target) in enumerate(zip(queries, targets)):
            grads = torch.autograd.grad(logits[query, target], layers, retain_graph=k < len(queries) - 1,
                                        allow_unused=True)
            means = [gradient_weighted(w[0], torch.zeros_like(w[0]) if g is None else g[0])
                     for w, g in zip(layers, grads)]
            rows.append(relevancy_row(means, query).cpu())
        weights.clear()
        return rows
    return session.call(body, reads, grad=True)


class Relevancy(Probe):
    name = "relevancy"
    description = ("gradient-weighted attention relevancy (Chefer et al. 2021, as in LVLM-Interpret) from each "
                   "generated token to the image patches and prompt tokens; one backward pass per token")
    params_class = RelevancyParams
    needs_image = True

    def run(self, session, request: ProbeRequest, params: RelevancyParams) -> RelevancyResult:
        run = self.cached_run(session, request)
        chosen = params.chosen(len(run.answer_positions))
        queries = [run.predicting_position(i) for i in chosen]
        targets = [run.token_map.input_ids[run.answer_positions[i]] for i in chosen]
        rows: list[torch.Tensor] = []
        if chosen:  # an empty answer has nothing to explain: an empty result, as the attention probe's
            extra = run.token_map.input_ids[run.prepared.length:max(queries) + 1]
            inputs = session.extend_inputs(run.prepared.inputs, extra)
            with session.attention_implementation("eager", text_only=True):
                rows = explain(session, inputs, queries, targets)
        relevancy = np.zeros((len(chosen), len(run.token_map)), dtype=np.float32)
        scale = np.zeros(len(chosen), dtype=np.float32)
        for k, (row, query) in enumerate(zip(rows, queries)):
            values, scale[k] = normalised(row, query)
            relevancy[k, : len(values)] = values.numpy()
        return RelevancyResult(**layout_of(run), image_positions=run.token_map.image_positions,
                               answer_indices=chosen, query_positions=queries, relevancy=relevancy, scale=scale)
