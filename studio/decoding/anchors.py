"""Generative anchors: representation editing with the model's own caption rendered back into an
image (Shi, Yang and Liu, "Exposing Hallucinations To Suppress Them: VLMs Representation Editing
With Generative Anchors", 2025, arXiv 2509.21997).

The idea: a caption the model wrote carries its hallucinations; projected back into the visual
space by a text-to-image model, it becomes an image that *shows* them. That image is the
negative anchor, the real image the positive anchor, and during decoding the decoder's hidden
states are pulled toward the positive anchor and pushed away from the negative one.

How this module does it (one request):

1. the caption to expose: the image captioned greedily with ``caption_prompt`` (for a caption
   request with that prompt, exactly the greedy answer);
2. the negative anchor: ``text_to_image(image, caption)``, resized to the real image's size so
   the two share one token layout;
3. decoding with three rows per request in one batch, ``n`` requests: rows ``0..n-1`` the
   answers (real image, edited), ``n..2n-1`` the positive anchors (real image, never edited),
   ``2n..3n-1`` the negative anchors (rendered image, never edited). Every row takes its
   answer's token, so the anchors read the same text as the answer at every step;
4. at each edited decoder layer ``l`` and edited position, the answer's output state ``h``
   becomes

       h' = h + pull * (h_pos - h) - push * (h_neg - h)

   with ``h_pos`` / ``h_neg`` the anchor rows' states at the same layer and position. With the
   symmetric setting ``pull == push`` (the default) this is ``h + pull * (h_pos - h_neg)``:
   the step from what the rendered caption evokes to what the image evokes, added to the answer.

The text-to-image model is pluggable: the registered one named by ``renderer``, else a session
attribute ``text_to_image`` (a function ``(image, caption) -> image``), else the first renderer registered with
:func:`register_text_to_image` whose ``applies(session)`` holds; the studio bundles none for real
models. The scene world registers an exact renderer for models that speak its language
(:mod:`studio.world.anchors`; this module never imports the world).

What follows the paper and what does not. The stored copies of the paper this was built from
(arXiv abstract page and summaries; no reference code was published or could be found) give:
a caption projected into the visual space by a text-to-image model as the negative anchor, the
original image as the positive anchor, decoder hidden states edited by pulling toward the
positive and pushing away from the negative, in shallow layers, with a symmetric setting
``alpha == beta`` (here ``pull == push``) and asymmetric variants. The full method section
was not available, so these are this module's own choices, each a departure to be checked
against the paper's text:

- the formula above (an algebraic pull/push on the residual stream, the anchors' states read
  live from parallel rows at the same position, rather than e.g. a fixed direction);
- layers: the shallow half of the decoder (``layers`` None: ``0 .. n_layers // 2 - 1``);
- positions: the last prompt position and every generated position (the states that predict
  a token); image and other prompt positions are never edited;
- strengths: ``pull = push = 1.0`` by default (the contrastive methods' alpha = 1 analogue;
  not a value from the paper, and not tuned on the world);
- greedy decoding only (no sampled variant); one caption per distinct image of a batch, decoded
  without the request's own interventions (e.g. steering), which edit only the answer rows;
- on the embedded model the text-to-image model is the world's exact renderer, which places
  the caption's objects in reading order on cells drawn from the caption's hash (a caption
  does not say where objects are, so the anchor's layout differs from the real image's).

``pull = push = 0`` is plain greedy decoding: no caption, no anchors, no edit.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image
from transformers import LogitsProcessor

from studio.decoding import register
from studio.decoding.base import DecodeBatch, DecodePlan, DecodingStrategy
from studio.engine.errors import InputError
from studio.engine.images import load_image
from studio.interventions import Intervention

TextToImage = Callable[[Image.Image, str], Image.Image]
MAX_STRENGTH = 10.0


@dataclass(frozen=True)
class Renderer:
    """A text-to-image model for anchors: ``render(image, caption) -> image``, used for sessions
    where ``applies(session)`` holds."""

    name: str
    render: TextToImage
    applies: Callable[[object], bool]


RENDERERS: dict[str, Renderer] = {}


def register_text_to_image(name: str, render: TextToImage, applies: Callable[[object], bool]) -> None:
    """Make ``render`` the anchors' text-to-image model for sessions where ``applies(session)``."""
    RENDERERS[name] = Renderer(name, render, applies)


def text_to_image_for(session, name: str | None = None) -> TextToImage:
    """The text-to-image model for ``session``: the named registered one, else the session's own
    ``text_to_image``, else the first registered one that applies; a clear InputError if none."""
    if name is not None:
        if name not in RENDERERS:
            raise InputError(f"no text-to-image model named {name!r} for anchors; registered: "
                             f"{', '.join(RENDERERS) or 'none'}")
        return RENDERERS[name].render
    own = getattr(session, "text_to_image", None)
    if own is not None:
        return own
    for renderer in RENDERERS.values():
        if renderer.applies(session):
            return renderer.render
    raise InputError(f"no text-to-image model for anchors: the studio bundles none for {session.adapter.family} "
                     f"models; set session.text_to_image to a function (image, caption) -> image, or register "
                     f"one with studio.decoding.anchors.register_text_to_image")


@dataclass(frozen=True)
class AnchorBatch(DecodeBatch):
    """Answer rows ``0..n-1``, positive anchors ``n..2n-1``, negative anchors ``2n..3n-1`` (row
    ``n + i`` and ``2n + i`` anchor answer ``i``), and the caption each answer's anchor renders."""

    captions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.inputs["input_ids"].shape[0] != 3 * self.answers:
            raise InputError(f"an anchored batch of {self.answers} answers needs {3 * self.answers} rows; "
                             f"got {self.inputs['input_ids'].shape[0]}")


class FollowAnswers(LogitsProcessor):
    """Every anchor row gets its answer's scores, so all three rows take the answer's token."""

    def __init__(self, answers: int) -> None:
        self.n = answers

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        answers = scores[:self.n]
        return torch.cat([answers, answers, answers])  # type: ignore[return-value]


def anchor_edit(value: torch.Tensor, answers: int, pull: float, push: float) -> torch.Tensor:
    """``value`` [3n, ...] with the answer rows edited: ``h + pull (h_pos - h) - push (h_neg - h)``."""
    n = answers
    h, positive, negative = value[:n], value[n:2 * n], value[2 * n:3 * n]
    out = value.clone()
    out[:n] = h + pull * (positive - h) - push * (negative - h)
    return out


@register
@dataclass(frozen=True)
class Anchors(DecodingStrategy):
    """Representation editing with generative anchors; ``pull`` / ``push`` in [0, 10] (``push``
    None: equal to ``pull``), ``layers`` a comma list like "0,1" (None: the shallow half),
    ``renderer`` a registered text-to-image model's name (None: the session's)."""

    pull: float = 1.0
    push: float | None = None
    layers: str | int | None = None
    caption_prompt: str = "describe the image ."
    caption_tokens: int = 64
    renderer: str | None = None
    name = "anchors"

    def __post_init__(self) -> None:
        for label, value in (("pull", self.pull), ("push", self.push_strength)):
            if not (isinstance(value, (int, float)) and 0 <= value <= MAX_STRENGTH):
                raise InputError(f"{label} must be between 0 and {MAX_STRENGTH}; got {value}")
        if not (isinstance(self.caption_tokens, int) and 1 <= self.caption_tokens <= 512):
            raise InputError(f"caption_tokens must be a whole number from 1 to 512; got {self.caption_tokens}")
        if self.layers is not None:
            parse_layers(self.layers)

    @property
    def push_strength(self) -> float:
        return self.pull if self.push is None else self.push

    @property
    def off(self) -> bool:
        return self.pull == 0 and self.push_strength == 0

    def edited_layers(self, session) -> list[int]:
        """The decoder layers edited: ``layers``, or the shallow half of the decoder."""
        layers = list(range(max(1, session.n_layers // 2))) if self.layers is None else parse_layers(self.layers)
        beyond = [i for i in layers if i >= session.n_layers]
        if beyond:
            raise InputError(f"layer {beyond[0]} is beyond the model's depth: choose 0..{session.n_layers - 1}")
        return layers

    def check(self, session) -> None:
        self.edited_layers(session)
        if not self.off:
            text_to_image_for(session, self.renderer)

    def captions(self, session, images: list[Image.Image]) -> list[str]:
        """Each image's greedy caption under ``caption_prompt`` (decoded once per distinct image)."""
        keys = [hashlib.sha1(i.tobytes() + repr((i.size, i.mode)).encode()).hexdigest() for i in images]
        distinct = {k: i for k, i in zip(keys, images)}
        texts = session.answer_batch(list(distinct.values()), [self.caption_prompt] * len(distinct),
                                     self.caption_tokens)
        by_key = dict(zip(distinct, texts))
        return [by_key[k] for k in keys]

    def anchors(self, session, images: list[Image.Image], captions: list[str]) -> list[Image.Image]:
        """The negative anchors: each caption rendered, at its real image's size."""
        render = text_to_image_for(session, self.renderer)
        out = []
        for image, caption in zip(images, captions):
            anchor = load_image(render(image, caption))
            out.append(anchor if anchor.size == image.size else anchor.resize(image.size, Image.Resampling.BICUBIC))
        return out

    def batch(self, session, prepared) -> DecodeBatch:
        if self.off:
            return DecodeBatch(prepared.inputs, 1)
        self.check(session)
        if prepared.image is None:
            raise InputError("anchors contrast the image with a rendering of its caption: give an image")
        captions = self.captions(session, [prepared.image])
        negative = session.prepare(self.anchors(session, [prepared.image], captions)[0], prepared.prompt).inputs
        return stack_three(prepared.inputs, prepared.inputs, negative, 1, captions)

    def rows(self, session, images: list, prompts: list[str]) -> DecodeBatch:
        if self.off:
            return super().rows(session, images, prompts)
        self.check(session)
        pictures = [load_image(i) for i in images]
        answers = session.batch_inputs(pictures, prompts)
        captions = self.captions(session, pictures)
        negative = session.batch_inputs(self.anchors(session, pictures, captions), prompts)
        return stack_three(answers, answers, negative, len(prompts), captions)

    def plan(self, session, batch: DecodeBatch) -> DecodePlan:
        if self.off:
            return DecodePlan()
        if not isinstance(batch, AnchorBatch):
            raise TypeError("the anchors strategy decodes an AnchorBatch")
        n, pull, push = batch.answers, float(self.pull), float(self.push_strength)
        ids = batch.inputs["input_ids"]
        last = torch.zeros_like(ids, dtype=torch.bool)
        last[:, -1] = True  # rows are left-padded: the last column is every row's last prompt position

        def edit(value: torch.Tensor) -> torch.Tensor:
            return anchor_edit(value, n, pull, push)
        layers = self.edited_layers(session)
        interventions = [Intervention("residual", layer, edit, positions=last) for layer in layers]
        trace = {"caption": batch.captions[0], "captions": list(batch.captions), "layers": layers}
        return DecodePlan(processors=[FollowAnswers(n)], interventions=interventions, trace=trace)


def parse_layers(text: str | int) -> list[int]:
    """``"0,1"`` (or one integer) -> ``[0, 1]``; InputError unless whole numbers >= 0."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise InputError(f"layers must be a comma list of decoder layers like \"0,1\"; got {text!r}")
    return sorted({int(p) for p in parts})


def stack_three(answers: dict, positive: dict, negative: dict, n: int, captions: list[str]) -> AnchorBatch:
    """Answer, positive-anchor and negative-anchor rows (one token layout) as one :class:`AnchorBatch`."""
    if not (answers["input_ids"].shape == positive["input_ids"].shape == negative["input_ids"].shape):
        raise InputError("the rendered anchor gives another token layout than the image; the anchors need one layout")
    inputs = {k: torch.cat([v, positive[k], negative[k]], dim=0) if torch.is_tensor(v) else v
              for k, v in answers.items()}
    return AnchorBatch(inputs, n, tuple(captions))
