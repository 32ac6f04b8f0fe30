"""VCD: Visual Contrastive Decoding (Leng et al., "Mitigating Object Hallucinations in Large
Vision-Language Models through Visual Contrastive Decoding", CVPR 2024, arXiv 2311.16922).

The amateur sees the image distorted by forward diffusion noise, so what survives in its
logits is what the model would say from language priors alone; the contrast subtracts it.
Noise follows the reference code (DAMO-NLP-SG/VCD, ``vcd_add_noise.py``): T = 1000 steps, a
sigmoid beta schedule from 1e-5 to 5e-3, x_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps on the
processor's normalised ``pixel_values``, noised once per request with a fixed seed, each image
on its own (:func:`image_parts`), so an answer does not depend on the batch it is decoded in.
Defaults: alpha = 1, beta = 0.1, noise step 500. Departure: the paper and its code sample
(temperature 1, top-p 1, no top-k); the studio decodes greedily on the contrast by default
(``sample=True`` gives the published sampler, see :mod:`studio.decoding.contrastive`).

Presets: ``paper`` (alpha 1, beta 0.1, noise step 500, sampling at temperature 1) and
``reference-code`` (the same, with the seed 55 its scripts pass). The two agree: the paper's
plausibility constraint on probabilities equals the code's on raw logits (a shift by the
log-partition). Noise is drawn once per request from ``noise_seed``; the reference draws it
from the global generator.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from studio.decoding import register
from studio.decoding.contrastive import ContrastiveStrategy
from studio.engine.errors import InputError

NOISE_STEPS = 1000


def alpha_bar(step: int, steps: int = NOISE_STEPS) -> float:
    """Cumulative signal fraction after ``step`` steps of the reference sigmoid schedule."""
    betas = torch.sigmoid(torch.linspace(-6, 6, steps, dtype=torch.float64)) * (5e-3 - 1e-5) + 1e-5
    return float(torch.cumprod(1 - betas, dim=0)[step])


def diffuse(pixels: torch.Tensor, step: int, seed: int) -> torch.Tensor:
    """``pixels`` after ``step`` forward-diffusion steps (noise drawn from a seeded generator)."""
    a = alpha_bar(step)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(pixels.shape, generator=generator, dtype=torch.float32).to(pixels.device)
    return (a ** 0.5 * pixels.float() + (1 - a) ** 0.5 * noise).to(pixels.dtype)


@register
@dataclass(frozen=True)
class VCD(ContrastiveStrategy):
    """Visual contrastive decoding; ``noise_step`` in [0, 999] (500 = the paper's default)."""

    noise_step: int = 500
    noise_seed: int = 0
    name = "vcd"
    PRESETS: ClassVar[dict[str, dict]] = {
        "paper": {"alpha": 1.0, "beta": 0.1, "noise_step": 500, "sample": True, "temperature": 1.0, "top_p": 1.0},
        "reference-code": {"alpha": 1.0, "beta": 0.1, "noise_step": 500, "sample": True, "temperature": 1.0,
                           "top_p": 1.0, "sample_seed": 55},
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (isinstance(self.noise_step, int) and 0 <= self.noise_step < NOISE_STEPS):
            raise InputError(f"noise_step must be an integer from 0 to {NOISE_STEPS - 1}; got {self.noise_step}")

    def amateurs(self, session, experts: dict, images: list, prompts: list[str]) -> dict:
        if "pixel_values" not in experts:
            raise InputError("VCD contrasts against a noised image: give an image")
        pixels = experts["pixel_values"]
        parts = image_parts(pixels, len(images), experts)
        noised = diffuse(pixels, self.noise_step, self.noise_seed) if parts is None else torch.cat(
            [diffuse(pixels[start:end], self.noise_step, self.noise_seed) for start, end in parts])
        return {**experts, "pixel_values": noised}


def image_parts(pixels: torch.Tensor, n_images: int, inputs: dict) -> list[tuple[int, int]] | None:
    """The rows of ``pixels`` that belong to each image, so each is noised as if it were alone (a
    request's noise then does not depend on the batch it is decoded in): one row per image, or
    Qwen-style flattened patches split by ``image_grid_thw``; None when the layout does not say
    (e.g. InternVL's tiles of several images), and the batch is noised as one tensor."""
    if pixels.shape[0] == n_images:
        return [(i, i + 1) for i in range(n_images)]
    grid = inputs.get("image_grid_thw")
    if grid is not None and len(grid) == n_images and int(grid.prod(-1).sum()) == pixels.shape[0]:
        ends = grid.prod(-1).cumsum(0).tolist()
        return list(zip([0, *ends[:-1]], ends))
    return None
