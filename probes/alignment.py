"""Implicit multimodal alignment: per decoder layer, how aligned the image tokens' states are
with the text tokens' states.

After Shukor & Cord, "Implicit Multimodal Alignment: On the Generalization of Frozen LLMs to
Multimodal Inputs" (NeurIPS 2024, arXiv 2405.16700; reference code github.com/mshukor/ima-lmms,
``Analysing_LLMs/compute_sim.py`` and ``utils.py``). As the reference code computes it for
LLaVA-1.5: at each layer, the image tokens' residual states are averaged over the image block,
the text tokens' states are averaged over the text that follows the image (the prompt after
the image and the generated answer, whose states were saved during generation), and the score
is the cosine similarity of the two means (``sim_mode="normal"``; ``eps`` guards a zero norm as
the reference's ``1e-7`` does). A score near 1 means the two modalities' pooled representations
point the same way at that depth; the paper reports that higher alignment goes with better task
scores and fewer hallucinations.

Departures, named:

- **One example, matched pair.** The reference averages the cosine over every (image example,
  text example) pair of a dataset (an N x N matrix, mismatched pairs included); a per-image
  probe scores the one matched pair. Averaging this probe over images gives the matched-pair
  mean, not the reference's all-pairs mean.
- **Layers.** ``score[l]`` is read after decoder layer ``l`` (the studio's residual stream),
  so there is no entry for the embedding output (the reference's ``hidden_states[0]``).
- **The "IMA" variant.** The reference's IMA plots across training (``--mode
  epochs_imagelayer0``) hold the image tokens at the language model's input and compare them
  with the text at every layer. The studio reads decoder-layer outputs only, so
  ``image_layer=k`` holds the image mean at the output of decoder layer ``k`` (0 is the
  nearest state to the input); None (default) compares the two at the same layer.
- **Other poolings** of the reference (mean / max / min / median of token-pair cosines) are
  not offered; ``text`` chooses which text tokens count ("after_image": the reference's
  default, ``discard_first_text``; "all": every non-image token, its ``system`` mode;
  "prompt": after the image but without the answer).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from probes.base import Probe, ProbeParams, ProbeRequest, ProbeResult
from studio.engine.errors import InputError

TEXT_CHOICES = ("after_image", "all", "prompt")
EPS = 1e-7


@dataclass(frozen=True)
class AlignmentParams(ProbeParams):
    """``text``: which text tokens are pooled (one of :data:`TEXT_CHOICES`); ``image_layer``:
    None to pool image and text at the same layer, or a decoder layer at which the image mean
    is held while the text layer varies."""

    text: str = "after_image"
    image_layer: int | None = None

    def __post_init__(self) -> None:
        if self.text not in TEXT_CHOICES:
            raise InputError(f"text must be one of {', '.join(TEXT_CHOICES)}; got {self.text!r}")
        if self.image_layer is not None and (
                type(self.image_layer) is not int or self.image_layer < 0):
            raise InputError(f"image_layer must be None or a non-negative layer index; got {self.image_layer!r}")


@dataclass
class AlignmentResult(ProbeResult):
    """``score`` [L] float32: per decoder layer, the cosine of the mean image-token state and the
    mean text-token state; ``text_positions`` [T] int64: the pooled text positions (prompt +
    answer indexing); ``n_image``: how many image positions were pooled."""

    prompt: str
    answer: str
    text: str
    image_layer: int | None
    n_image: int
    text_positions: np.ndarray
    score: np.ndarray
    probe = "alignment"


def text_positions(image_positions: Sequence[int], length: int, prompt_length: int, text: str) -> list[int]:
    """The text positions pooled for ``text`` (see :data:`TEXT_CHOICES`) in a sequence of
    ``length`` positions whose first ``prompt_length`` are the prompt."""
    images = set(image_positions)
    last_image = max(images)
    if text == "all":
        return [p for p in range(length) if p not in images]
    end = prompt_length if text == "prompt" else length
    return list(range(last_image + 1, end))


def alignment_scores(hidden: torch.Tensor, image_positions: Sequence[int], text_positions: Sequence[int],
                     image_layer: int | None = None) -> np.ndarray:
    """[L] float32: cosine, at each layer, of the mean of ``hidden`` [L, S, d] over the image
    positions and its mean over the text positions (the image mean taken at ``image_layer`` for
    every layer when given)."""
    if len(image_positions) == 0 or len(text_positions) == 0:
        raise InputError("the alignment score needs image tokens and text tokens to pool")
    states = hidden.double()
    image = states[:, list(image_positions)].mean(1)
    text = states[:, list(text_positions)].mean(1)
    if image_layer is not None:
        image = image[image_layer].expand_as(text)
    cos = (image * text).sum(-1) / (image.norm(dim=-1) * text.norm(dim=-1) + EPS)
    return cos.cpu().numpy().astype(np.float32)


class Alignment(Probe):
    name = "alignment"
    description = "per-layer cosine of the mean image-token and mean text-token states (implicit multimodal alignment)"
    params_class = AlignmentParams
    needs_image = True

    def run(self, session, request: ProbeRequest, params: AlignmentParams) -> AlignmentResult:
        run = self.cached_run(session, request)
        if params.image_layer is not None and params.image_layer >= session.n_layers:
            raise InputError(f"image_layer must be below the model's {session.n_layers} decoder layers; "
                             f"got {params.image_layer}")
        images = run.token_map.image_positions
        texts = text_positions(images, len(run.token_map), run.prepared.length, params.text)
        if not texts:
            raise InputError(f"no text tokens to pool with text={params.text!r}: nothing follows the image here")
        return AlignmentResult(
            prompt=run.prepared.prompt, answer=run.generation.text, text=params.text, image_layer=params.image_layer,
            n_image=len(images), text_positions=np.asarray(texts, dtype=np.int64),
            score=alignment_scores(run.hidden, images, texts, params.image_layer))
