"""Per-word hallucination detector: two scores for every generated object word, and a box.

(a) **Internal confidence** (Jiang et al., "Interpreting and Editing Vision-Language
Representations to Mitigate Hallucinations", ICLR 2025, arXiv 2410.02762): the maximum over
image positions and layers of the logit-lens probability of the word's token. Departures:
the lens applies the final norm before the unembedding (the reference code skips it; with
it, the last layer equals the model's output, which our tests check), and softmax is over
the full vocabulary (as the reference does for LLaVA-NeXT, not its top-50 renormalisation
for LLaVA-1.5). A word's token is its first generated sub-token. The maximum runs over the
layers the logit lens decodes by default: every layer unless the vocabulary makes that cost
more than 1.5 forwards (:func:`probes.logit_lens.lens_layers`; Qwen2-VL-2B: 14 of 28 layers,
evenly spaced), the paper's every layer otherwise.

(b) **Contextual similarity** (Phukan et al., "Beyond Logit Lens: Contextual Embeddings for
Robust Hallucination Detection & Grounding in VLMs", NAACL 2025, arXiv 2411.19187): the
maximum cosine between the word's hidden state and the image-patch hidden states. The paper
scores whole answers (mean over answer tokens); like its object-level use in later work
(GLSIM), we take the object token's own state. Layers: a middle layer for both (default
L // 2), as the issue asks; the paper's reimplementations use L/2 for patches and 3L/4 for
text, which ``image_layer`` / ``text_layer`` allow.

Grounding: the best-matching patch, and a box around the patches whose similarity is within
``box_margin`` of the best (on the main grid).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch

from probes.base import Probe, ProbeParams, ProbeRequest, check_range
from probes.layout import LayoutResult, layout_of
from probes.logit_lens import Softmax, lens_layers
from probes.runs import Run
from studio.engine.errors import InputError


def coco_words() -> tuple[str, ...]:
    """The 80 COCO categories and their synonyms (``probes/data/coco_objects.json``, source named there)."""
    data = json.loads(resources.files("probes").joinpath("data/coco_objects.json").read_text())
    return tuple(dict.fromkeys(w for name, synonyms in data["classes"].items() for w in (name, *synonyms)))


def default_lexicon(session) -> tuple[str, ...]:
    """The model's own object words when its folder names them (``session.objects``: the world's
    kinds for the embedded model), else the COCO categories and their synonyms."""
    return tuple(session.objects) or coco_words()


@dataclass(frozen=True)
class DetectorParams(ProbeParams):
    """Layers default to the middle decoder layer; ``lexicon`` None = the model's own object words
    (``session.objects``) or else the COCO categories with synonyms."""

    text_layer: int | None = None
    image_layer: int | None = None
    box_margin: float = 0.05
    lexicon: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        check_range("box_margin", self.box_margin, 0.0, 2.0)


@dataclass
class DetectorResult(LayoutResult):
    """Per object word w (W words, P image positions ``image_positions``, L layers):

    - ``internal_confidence`` [W]: max over layers and image positions of the lens probability;
    - ``confidence_maps`` [W, P]: that probability maxed over layers, per image position;
    - ``contextual_similarity`` [W]: max cosine to an image position; ``similarity_maps`` [W, P];
    - ``best_positions`` [W] int: the image position of the best cosine; ``boxes`` [W, 4] float
      (left, top, right, bottom) in image pixels.
    """

    image_positions: list[int]
    words: list[str]
    answer_indices: list[int]
    text_layer: int
    image_layer: int
    internal_confidence: np.ndarray
    confidence_maps: np.ndarray
    contextual_similarity: np.ndarray
    similarity_maps: np.ndarray
    best_positions: np.ndarray
    boxes: np.ndarray
    probe = "detector"


WORD = re.compile(r"[a-z]+")


def object_words(run: Run, lexicon: tuple[str, ...]) -> list[tuple[int, str]]:
    """(answer index, object) for each mention of an object of ``lexicon`` in the answer, matched
    on whole words however the tokenizer split them ("gir" + "affe" is "giraffe"), plurals
    ("rings", "benches") and two-word names ("fire hydrant") included. The index is that of the
    mention's first sub-token: the token whose lens probability and state the scores read."""
    text, owner = "", []
    for i, token in enumerate(run.answer_tokens):
        piece = token.replace("Ġ", " ").replace("▁", " ").lower()
        text += piece
        owner += [i] * len(piece)
    words = [(m.start(), m.group()) for m in WORD.finditer(text)]
    names = {name.lower() for name in lexicon}
    found, skip = [], 0
    for k, (start, word) in enumerate(words):
        if k < skip:
            continue
        pair = f"{word} {words[k + 1][1]}" if k + 1 < len(words) else ""
        if _singular(pair, names):
            found.append((owner[start], _singular(pair, names)))
            skip = k + 2
        elif _singular(word, names):
            found.append((owner[start], _singular(word, names)))
    return found


def _singular(word: str, names: set[str]) -> str:
    """The lexicon entry ``word`` names (itself, or its singular: -s, -es), else ""."""
    for stem in (word, word[:-1] if word.endswith("s") else "", word[:-2] if word.endswith("es") else ""):
        if stem and stem in names:
            return stem
    return ""


def _layer(value: int | None, n_layers: int, name: str) -> int:
    layer = n_layers // 2 if value is None else value
    if not 0 <= layer < n_layers:
        raise InputError(f"{name} {layer} is out of range: the model has layers 0..{n_layers - 1}")
    return layer


def confidence_maps(session, run: Run, token_ids: list[int], images: list[int]) -> torch.Tensor:
    """[W, P]: each token's lens probability at each image position, maxed over the layers the
    logit lens decodes by default (:func:`probes.logit_lens.lens_layers`); read from the logit
    lens's tracked tokens when that probe has already decoded them for this run."""
    layers = lens_layers(session, run.hidden.shape[0])
    tracked = run.memo.get("tracked")
    if tracked is not None and set(token_ids) <= set(tracked[1].tolist()) and set(layers) <= set(tracked[0]):
        decoded, targets, probs = tracked
        columns = [targets.tolist().index(t) for t in token_ids]
        rows = [decoded.index(layer) for layer in layers]
        return probs[rows][:, images][..., columns].amax(0).T.float()
    ids = torch.tensor(token_ids, dtype=torch.long)

    softmax = Softmax()

    def decode() -> torch.Tensor:
        best = torch.zeros(len(token_ids), len(images))
        for layer in layers:
            probs = softmax(session.adapter.lens(run.hidden[layer, images]))
            best = torch.maximum(best, probs[:, ids].T.cpu())
        return best
    return session.call(decode)  # the lens is the model's final norm and unembedding: a model call


def _cell(tmap, position: int) -> tuple[int, int]:
    placement = tmap.image[position]
    assert placement.row is not None and placement.col is not None, "only patch tokens are grounded"
    return placement.row, placement.col


def grounding_box(run: Run, sims: torch.Tensor, images: list[int], margin: float) -> tuple[int, list[float]]:
    """The best image position and the box around main-grid patches within ``margin`` of it (NaN
    when the family's patch geometry is unknown)."""
    tmap = run.token_map
    if tmap.main_grid is None:
        return images[int(sims.argmax())], [float("nan")] * 4
    main = tmap.main_grid
    on_main = [k for k, pos in enumerate(images) if tmap.image[pos].grid == main and tmap.image[pos].row is not None]
    pool = on_main or list(range(len(images)))
    best = max(pool, key=lambda k: float(sims[k]))
    grid = tmap.grids[tmap.image[images[best]].grid]
    near = [k for k in pool if float(sims[k]) >= float(sims[best]) - margin
            and tmap.image[images[k]].grid == tmap.image[images[best]].grid]
    boxes = [grid.patch_box(*_cell(tmap, images[k])) for k in near]
    box = [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]
    return images[best], box


class Detector(Probe):
    name = "detector"
    description = "per object word: internal confidence and contextual similarity, with a grounding box"
    params_class = DetectorParams
    needs_image = True

    def run(self, session, request: ProbeRequest, params: DetectorParams) -> DetectorResult:
        run = self.cached_run(session, request)
        images = [p for p in run.token_map.image_positions if run.token_map.image[p].row is not None] \
            or run.token_map.image_positions  # token level when the family's patch geometry is unknown
        n_layers = run.hidden.shape[0]
        text_layer = _layer(params.text_layer, n_layers, "text_layer")
        image_layer = _layer(params.image_layer, n_layers, "image_layer")
        found = object_words(run, params.lexicon or default_lexicon(session))
        token_ids = [run.token_map.input_ids[run.answer_positions[i]] for i, _ in found]
        conf = confidence_maps(session, run, token_ids, images) if found else torch.zeros(0, len(images))
        patches = torch.nn.functional.normalize(run.hidden[image_layer, images].float(), dim=-1)
        words = torch.nn.functional.normalize(
            run.hidden[text_layer, [run.answer_positions[i] for i, _ in found]].float(), dim=-1)
        sims = (words @ patches.T).cpu()
        grounded = [grounding_box(run, sims[w], images, params.box_margin) for w in range(len(found))]
        return DetectorResult(
            **layout_of(run), image_positions=images, words=[w for _, w in found],
            answer_indices=[i for i, _ in found], text_layer=text_layer, image_layer=image_layer,
            internal_confidence=conf.amax(-1).numpy().astype(np.float32) if found else np.zeros(0, np.float32),
            confidence_maps=conf.numpy().astype(np.float32),
            contextual_similarity=sims.amax(-1).numpy().astype(np.float32) if found else np.zeros(0, np.float32),
            similarity_maps=sims.numpy().astype(np.float32),
            best_positions=np.array([g[0] for g in grounded], dtype=np.int64),
            boxes=np.array([g[1] for g in grounded], dtype=np.float32).reshape(-1, 4))
