"""Layer drift: how far the image moves the model's state, layer by layer.

Per decoder layer, the cosine similarity between the last prompt position's residual state
with the image and (a) with the image blanked (a uniform mean-grey image of the same size,
same token layout) and (b) with the image removed (text-only prompt), after the seed
survey's safety-drift analysis. A curve that falls means the image changes what the model
carries forward at that depth.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from probes.base import Probe, ProbeParams, ProbeRequest, ProbeResult

BLANK_GREY = (124, 116, 104)


@dataclass
class DriftResult(ProbeResult):
    """``cos_blank`` [L] and ``cos_removed`` [L] float32: per-layer cosine of the last prompt
    state with the image against the blanked-image and text-only runs (NaN where the model
    cannot run without an image)."""

    prompt: str
    cos_blank: np.ndarray
    cos_removed: np.ndarray
    probe = "drift"


def _last_states(session, image, prompt: str) -> torch.Tensor:
    return session.last_states(session.prepare(image, prompt)).float()


class Drift(Probe):
    name = "drift"
    description = "per-layer cosine of the last prompt state with the image vs blanked / removed"
    params_class = ProbeParams
    needs_image = True

    def run(self, session, request: ProbeRequest, params: ProbeParams) -> DriftResult:
        run = self.cached_run(session, request)
        with_image = run.hidden[:, run.prepared.length - 1].float()
        blank = Image.new("RGB", run.prepared.image.size, BLANK_GREY)
        cos = torch.nn.functional.cosine_similarity
        removed = torch.full_like(with_image[:, 0], float("nan")) if session.requires_image else \
            cos(with_image, _last_states(session, None, request.prompt), dim=-1)
        return DriftResult(
            prompt=run.prepared.prompt,
            cos_blank=cos(with_image, _last_states(session, blank, request.prompt), dim=-1).numpy().astype(np.float32),
            cos_removed=removed.numpy().astype(np.float32))
