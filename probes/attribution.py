"""Attribution with captum for one generated token: patch occlusion and integrated gradients.

The explained quantity is the log-probability the model gives the chosen generated token at
the position that predicts it (teacher-forced on the rest of the answer).

- **Occlusion**: captum ``FeatureAblation`` on ``pixel_values`` with a feature mask that groups
  the pixels feeding each image token (the adapter's ``pixel_token_groups``) into regions of
  neighbouring patches (``occlusion_regions``, default 12; 0 = one region per token, one
  forward each, which on a 576-token model is ~15x the default's cost), ablated to ~0 (the
  processor's normalised mean colour). Score = drop in log-probability; each token shows its
  region's score.
Every evaluation projects only the predicting position to the vocabulary (``logits_to_keep``);
the gradient passes recompute every layer's activations in the backward pass instead of
keeping them (``recompute="all"``: a pixel gradient through many tiles, or a long prompt
through the decoder, would otherwise hold several times the weights; it costs about one more
forward per step), a vision tower that encodes its tiles apart runs backward one tile at a
time (a third pass through the tower, instead of one layer's activations over every tile at
once), and the prompt's gradients encode the image once for all their passes
(``reuse_image_features``: the pixels do not change there).

- **Integrated gradients on pixels** (captum ``IntegratedGradients``, black-to-mean baseline 0),
  summed per image token; and **on prompt-token embeddings** (the input embedding layer's
  output, baseline = text tokens replaced by padding), summed over width. Both report captum's
  convergence delta (completeness error); with the default 4 steps it is larger than with many,
  which is why it is shown.

The prompt's integration is what captum's ``LayerIntegratedGradients`` on the embedding layer
computes (``IntegratedGradients`` over the layer's output, substituted by a hook, tested equal),
but the layer's outputs at the prompt and at its baseline come from passes stopped right after
the layer instead of two full forwards. The unchanged inputs' log-probability is evaluated once
and reused by occlusion's reference and both convergence deltas. With ``R`` occluded regions and
``n`` steps an attribution makes ``R + 3`` model evaluations without gradients (one of them
reusing the image's encoding) and ``2n`` with gradients.

The pixel baseline is a near-zero constant rather than exactly 0: Idefics3 and SmolVLM drop
image views whose pixels are all exactly zero as padding, which would change the token layout.

Captum treats dimension 0 as the batch, but some families' ``pixel_values`` have no batch
dimension (Qwen2-VL's are [patches, features]); inputs are therefore given a leading batch
of 1 and evaluated one example at a time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from captum.attr import FeatureAblation, IntegratedGradients

from probes.base import Probe, ProbeParams, ProbeRequest, check_range
from probes.layout import LayoutResult, layout_of
from probes.runs import Run
from studio.engine.errors import InputError

PIXEL_BASELINE = 1e-3


BACKWARD_COST = 3  # a forward + backward pass costs about three forwards


@dataclass(frozen=True)
class AttributionParams(ProbeParams):
    """``answer_index``: which generated token to explain; ``ig_steps``: integration steps (for
    pixels and for prompt tokens each); ``occlusion_regions``: at most this many occluded
    regions of neighbouring patches (0: every image token on its own, one forward each).

    The defaults keep one attribution within about 40 forward passes on any model: 12 regions,
    4 integration steps with captum's convergence delta reported (raise them for finer maps)."""

    answer_index: int = 0
    ig_steps: int = 4
    occlusion_regions: int = 12

    def __post_init__(self) -> None:
        check_range("answer_index", self.answer_index, 0, 10_000)
        check_range("ig_steps", self.ig_steps, 2, 512)
        check_range("occlusion_regions", self.occlusion_regions, 0, 100_000)

    def forward_passes(self, image_tokens: int) -> int:
        """About how many forward passes one attribution costs with ``image_tokens`` image tokens:
        its evaluations without gradients and, at about three forwards each, its gradient steps."""
        occluded = min(self.occlusion_regions, image_tokens) if self.occlusion_regions else image_tokens
        return 3 + occluded + 2 * self.ig_steps * BACKWARD_COST


@dataclass
class AttributionResult(LayoutResult):
    """Arrays (P image positions ``image_positions``, S prompt positions):

    - ``occlusion`` [P]: drop in the token's log-probability when that image token's pixels are ablated;
    - ``ig_pixels`` [P]: integrated gradients on pixels, summed per image token;
    - ``ig_prompt`` [S]: integrated gradients on each prompt position's input embedding.
    """

    image_positions: list[int]
    answer_index: int
    target_token: str
    log_prob: float
    ig_pixels_delta: float
    ig_prompt_delta: float
    occlusion: np.ndarray
    ig_pixels: np.ndarray
    ig_prompt: np.ndarray
    probe = "attribution"


class _Stopped(Exception):
    """Ends a pass once the input embedding layer has produced what was asked of it."""


class _Target:
    """Callables for captum: the chosen token's log-probability under changed pixels, ids or
    input embeddings.

    The unchanged inputs' log-probability is computed once and given again whenever an
    evaluation without gradients sees inputs equal in value to them: captum evaluates them for
    occlusion's reference and for each convergence delta, and the model's answer cannot differ
    (pixels are compared in the inputs' own dtype, to which every family's tower casts them)."""

    def __init__(self, session, run: Run, answer_index: int) -> None:
        self.session = session
        position = run.answer_positions[answer_index]
        self.token = run.token_map.input_ids[position]
        self.inputs = session.extend_inputs(run.prepared.inputs, run.token_map.input_ids[run.prepared.length:position])
        self.predicting = position - 1
        self.embedding = session.adapter.embeddings()
        self.embedded: torch.Tensor | None = None
        self.unchanged: float | None = None

    def _log_prob(self, **changes) -> torch.Tensor:
        inputs = {**self.inputs, **changes}
        assert inputs["input_ids"].shape[1] == self.predicting + 1, "the predicting position is the last"
        logits = self.session.model(**inputs, logits_to_keep=1, use_cache=False).logits[0, -1].float()
        return torch.log_softmax(logits, dim=-1)[self.token]

    def _remembered(self, same: bool, evaluate) -> torch.Tensor:
        """``evaluate()``, or the unchanged inputs' value when ``same`` and no gradient is asked."""
        if not same or torch.is_grad_enabled():
            return evaluate()
        if self.unchanged is None:
            self.unchanged = float(evaluate())
        return torch.tensor(self.unchanged)

    def of_pixels(self, batch: torch.Tensor) -> torch.Tensor:
        original = self.inputs["pixel_values"]
        return torch.stack([self._remembered(_same_values(pixels, original),
                                             lambda pixels=pixels: self._log_prob(pixel_values=pixels))
                            for pixels in batch])

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """The input embedding layer's output for ``ids`` [1, S], from a pass stopped right after it."""
        kept: list[torch.Tensor] = []

        def stop(module, args, output: torch.Tensor) -> None:
            kept.append(output.detach().clone())
            raise _Stopped
        handle = self.embedding.register_forward_hook(stop)
        try:
            self._log_prob(input_ids=ids)
        except _Stopped:
            pass
        finally:
            handle.remove()
        return kept[0]

    def of_embeddings(self, batch: torch.Tensor) -> torch.Tensor:
        """The log-probability with the input embedding layer's output replaced by each of ``batch``."""
        def evaluate(embedded: torch.Tensor) -> torch.Tensor:
            handle = self.embedding.register_forward_hook(lambda module, args, output: embedded[None])
            try:
                return self._log_prob()
            finally:
                handle.remove()
        return torch.stack([self._remembered(self.embedded is not None and torch.equal(row, self.embedded[0]),
                                             lambda row=row: evaluate(row)) for row in batch])


def _same_values(changed: torch.Tensor, original: torch.Tensor) -> bool:
    """Whether ``changed`` holds exactly ``original``'s numbers (in any floating dtype)."""
    return changed.shape == original.shape and torch.equal(changed, original.to(changed.dtype))


def _per_group(values: torch.Tensor, groups: torch.Tensor, n: int, reduce: str) -> np.ndarray:
    flat_groups = groups.expand_as(values).flatten()
    keep = flat_groups >= 0
    out = torch.zeros(n, dtype=torch.float64)
    out.index_add_(0, flat_groups[keep], values.flatten()[keep].double())
    if reduce == "mean":
        counts = torch.bincount(flat_groups[keep], minlength=n).clamp(min=1)
        out = out / counts
    return out.numpy().astype(np.float32)


def occlusion_regions(token_map, limit: int) -> torch.Tensor:
    """For each image token (in position order), the region it is occluded with: each grid's
    patches grouped into blocks of neighbours, as many blocks per grid as keeps the total within
    ``limit`` (at least one per grid); tokens covering no patch form one region per grid.
    ``limit`` 0: every token its own region."""
    positions = token_map.image_positions
    if not limit:
        return torch.arange(len(positions))
    grids = max(1, len(token_map.grids))
    side = max(1, math.isqrt(limit // grids))
    keys: dict[tuple, int] = {}
    out = []
    for position in positions:
        placement = token_map.image[position]
        if placement.row is None or placement.col is None:
            key: tuple = (placement.grid, -1, -1)
        else:
            grid = token_map.grids[placement.grid]
            key = (placement.grid, placement.row * min(side, grid.rows) // grid.rows,
                   placement.col * min(side, grid.cols) // grid.cols)
        out.append(keys.setdefault(key, len(keys)))
    return torch.tensor(out)


def occlusion_mask(groups: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Captum's feature mask: each pixel's region (``groups``: its image token, -1 for none;
    ``region``: each token's region); pixels no token covers form one feature of their own."""
    by_region = torch.where(groups >= 0, region[groups.clamp(min=0)], groups)
    return torch.where(by_region >= 0, by_region, torch.full_like(by_region, int(region.max()) + 1))


def baseline_ids(session, input_ids: torch.Tensor) -> torch.Tensor:
    """Text tokens replaced by padding; special and image tokens kept (they carry the structure)."""
    special = set(session.tokenizer.all_special_ids) | {session.adapter.image_token_id()}
    pad = session.tokenizer.pad_token_id if session.tokenizer.pad_token_id is not None else 0
    keep = torch.tensor([int(i) in special for i in input_ids.flatten()]).reshape(input_ids.shape)
    return torch.where(keep, input_ids, torch.full_like(input_ids, pad))


class Attribution(Probe):
    name = "attribution"
    description = "patch occlusion and integrated gradients (pixels, prompt tokens) for one generated token"
    params_class = AttributionParams
    needs_image = True

    def run(self, session, request: ProbeRequest, params: AttributionParams) -> AttributionResult:
        run = self.cached_run(session, request)
        if params.answer_index >= len(run.answer_positions):
            raise InputError(f"answer_index {params.answer_index} is out of range: the answer has "
                             f"{len(run.answer_positions)} tokens")
        target = _Target(session, run, params.answer_index)
        pixels = target.inputs["pixel_values"]
        groups = session.adapter.pixel_token_groups(target.inputs).to(pixels.device)
        n = len(run.token_map.image_positions)
        region = occlusion_regions(run.token_map, params.occlusion_regions).to(groups.device)
        mask = occlusion_mask(groups, region).expand_as(pixels)[None]
        def occlude():
            return FeatureAblation(target.of_pixels).attribute(pixels[None], baselines=PIXEL_BASELINE,
                                                               feature_mask=mask)

        def integrate_pixels():
            return IntegratedGradients(target.of_pixels).attribute(
                pixels[None].float().requires_grad_(), baselines=PIXEL_BASELINE, n_steps=params.ig_steps,
                internal_batch_size=1, return_convergence_delta=True)

        def integrate_prompt():
            ids = target.inputs["input_ids"]
            with torch.no_grad():
                target.embedded, baseline = target.embed(ids), target.embed(baseline_ids(session, ids))
            return IntegratedGradients(target.of_embeddings).attribute(
                target.embedded, baselines=baseline, n_steps=params.ig_steps, internal_batch_size=1,
                return_convergence_delta=True)
        occlusion = session.call(occlude)
        log_prob = float(torch.log_softmax(run.answer_logits[params.answer_index], -1)[target.token])
        ig_pixels, pixel_delta = session.call(integrate_pixels, grad=True, recompute="all")
        ig_prompt, prompt_delta = session.call(integrate_prompt, grad=True, recompute="all", reuse_image_features=True)
        prompt_scores = ig_prompt[0].sum(-1)[: run.prepared.length].detach().float().cpu().numpy()
        return AttributionResult(
            **layout_of(run), image_positions=run.token_map.image_positions, answer_index=params.answer_index,
            target_token=run.token_map.tokens[run.answer_positions[params.answer_index]], log_prob=log_prob,
            ig_pixels_delta=float(pixel_delta.abs().max()), ig_prompt_delta=float(prompt_delta.abs().max()),
            occlusion=_per_group(occlusion[0].detach(), groups, n, "mean"),
            ig_pixels=_per_group(ig_pixels[0].detach(), groups, n, "sum"),
            ig_prompt=prompt_scores.astype(np.float32))
