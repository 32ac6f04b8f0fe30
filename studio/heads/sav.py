"""Sparse Attention Vectors (SAVs): few-shot classifiers from a handful of attention heads.

Mitra et al., "Sparse Attention Vectors: Generative Multimodal Model Features Are
Discriminative Vision-Language Classifiers" (arXiv 2412.00142, ICCV 2025); reference code
github.com/chancharikmitra/SAVs (``src/utils.py``: ``mllm_encode``, ``mllm_classify``). From a
few labelled (image, prompt) examples (the paper: about 20 per class):

1. every attention head's output at the last prompt position is read: the head's slice of the
   input to the attention output projection ``o_proj`` (the reference's ``retain_input`` on
   ``self_attn.o_proj``), here through the ``attention_output`` intervention site;
2. each class's mean vector is taken per head, and every head is scored by how many of the
   same few-shot examples it gets right as a nearest-class-mean classifier under cosine
   similarity (the reference scores heads on the training examples themselves, no split);
3. the ``k`` heads with most right are kept (the reference's ``num_head=20``);
4. a query is classified by majority vote: each kept head votes for the class whose mean is
   nearest in cosine (the reference's ``retrieve_examples``).

Departures, named:

- ``k``: the paper keeps 20 of LLaVA-OneVision-7B's 28 x 28 = 784 heads (2.55%). The embedded
  model has 4 layers x 4 heads = 16, so 20 cannot be kept: :class:`SAVConfig` takes ``k``, or
  by default the paper's fraction ``20 / 784`` of the model's heads rounded up, which is 1 of
  16 (the "vote" is then that one head's answer; larger ``k`` is a setting).
- ties, which the reference leaves to ``np.argsort``: heads with the same training score rank
  by (layer, head). A tied vote goes, as in the reference's ``Counter.most_common``, to the tied
  class voted for first in head rank order; a cosine tie goes to the earlier class.
- classes are numbered in sorted order (the reference: order of first appearance); this
  changes no prediction beyond the cosine-tie rule above.
- head width: the reference splits ``hidden_size`` by ``num_attention_heads``; here the
  projection's input width is split by ``num_attention_heads`` (equal for LLaVA and Qwen2,
  and right for families whose heads * head_dim is not the hidden size).
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save

from studio.engine.errors import InputError
from studio.engine.files import atomic_write, atomic_write_json
from studio.interventions import read

PAPER_HEADS = 20
PAPER_MODEL_HEADS = 28 * 28  # LLaVA-OneVision-7B (Qwen2-7B): 28 layers x 28 heads
PAPER_FRACTION = PAPER_HEADS / PAPER_MODEL_HEADS
PAPER_SHOTS = 20  # examples per class


@dataclass(frozen=True)
class SAVConfig:
    """How many heads vote: ``k`` when given, else ``ceil(fraction * heads of the model)``."""

    k: int | None = None
    fraction: float = PAPER_FRACTION

    def __post_init__(self) -> None:
        if self.k is not None and (isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1):
            raise InputError(f"SAV k (heads that vote) must be a positive integer; got {self.k!r}")
        if not 0 < self.fraction <= 1:
            raise InputError(f"SAV fraction of heads must be in (0, 1]; got {self.fraction!r}")

    def heads_for(self, total: int) -> int:
        """The number of heads to keep out of ``total``; k above ``total`` is refused."""
        k = self.k if self.k is not None else max(1, math.ceil(self.fraction * total))
        if k > total:
            raise InputError(f"SAV k={k} is more than the model's {total} attention heads")
        return k


@dataclass
class SAVClassifier:
    """The chosen heads and their class means.

    ``heads``: (layer, head) in rank order (best first); ``means`` [classes, k, head_dim];
    ``head_accuracy`` [layers, heads]: every head's few-shot accuracy (the selection score);
    ``shape``: (layers, heads, head_dim) of the features it reads."""

    classes: list[str]
    heads: list[tuple[int, int]]
    means: torch.Tensor
    head_accuracy: np.ndarray
    config: SAVConfig = field(default_factory=SAVConfig)
    n_examples: int = 0
    model: str = ""
    task: str = ""

    def __post_init__(self) -> None:
        k = len(self.heads)
        if len(self.classes) < 2 or self.means.shape[:2] != (len(self.classes), k):
            raise InputError(f"SAV means {tuple(self.means.shape)} do not fit {len(self.classes)} classes "
                             f"and {k} heads")

    @property
    def shape(self) -> tuple[int, int, int]:
        layers, heads = self.head_accuracy.shape
        return int(layers), int(heads), int(self.means.shape[-1])

    def head_votes(self, features: torch.Tensor | np.ndarray) -> torch.Tensor:
        """[n, k]: the class index each chosen head votes for, for every row of ``features``."""
        x = check_features(features, self.shape)
        chosen = x[:, [h[0] for h in self.heads], [h[1] for h in self.heads]]  # [n, k, d]
        return cosine_to_means(chosen, self.means).argmax(-1)

    def votes(self, features: torch.Tensor | np.ndarray) -> np.ndarray:
        """[n, classes]: how many chosen heads vote for each class (the reference's counts)."""
        per_head = self.head_votes(features)
        return np.stack([(per_head == c).sum(-1).numpy() for c in range(len(self.classes))], axis=1)

    def predict(self, features: torch.Tensor | np.ndarray) -> list[str]:
        """The majority-vote class of every row of ``features`` [n, layers, heads, head_dim]."""
        return [self.classes[majority(row.tolist())] for row in self.head_votes(features)]

    def save(self, folder: str | Path) -> None:
        """``sav.safetensors`` (means, head accuracy) and ``sav.json``, each written atomically."""
        out = Path(folder)
        tensors = {"means": self.means.detach().float().contiguous(),
                   "head_accuracy": torch.from_numpy(np.ascontiguousarray(self.head_accuracy, dtype=np.float32))}
        atomic_write(out / "sav.safetensors", save(tensors))
        atomic_write_json(out / "sav.json", {"classes": self.classes, "heads": [list(h) for h in self.heads],
                                             "config": asdict(self.config), "n_examples": self.n_examples,
                                             "model": self.model, "task": self.task})

    @classmethod
    def load(cls, folder: str | Path) -> "SAVClassifier":
        """Read a classifier written by :meth:`save`."""
        path = Path(folder)
        if not (path / "sav.safetensors").is_file() or not (path / "sav.json").is_file():
            raise InputError(f"{path} holds no SAV classifier (sav.safetensors and sav.json)")
        meta = json.loads((path / "sav.json").read_text())
        tensors = load_file(str(path / "sav.safetensors"))
        return cls(list(meta["classes"]), [(int(a), int(b)) for a, b in meta["heads"]], tensors["means"],
                   tensors["head_accuracy"].numpy(), SAVConfig(**meta["config"]), int(meta["n_examples"]),
                   meta["model"], meta["task"])


def majority(head_votes: list[int]) -> int:
    """The most-voted class; a tie goes to the tied class voted for first (heads in rank order)."""
    counts: dict[int, int] = {}
    for vote in head_votes:
        counts[vote] = counts.get(vote, 0) + 1
    return max(counts, key=lambda c: counts[c])  # max keeps the first of equals, dicts keep first-vote order


def cosine_to_means(x: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """[n, h, classes]: cosine of each row's head vector ``x`` [n, h, d] to each class mean [C, h, d]."""
    return torch.nn.functional.cosine_similarity(x[:, :, None, :], means.permute(1, 0, 2)[None], dim=-1)


def check_features(features: torch.Tensor | np.ndarray, shape: tuple[int, int, int] | None = None) -> torch.Tensor:
    """``features`` as a float32 tensor [n, layers, heads, head_dim], refused if it is not one."""
    x = torch.as_tensor(features).float()
    if x.ndim != 4 or x.shape[0] == 0:
        raise InputError(f"SAV features must be [examples, layers, heads, head_dim]; got {tuple(x.shape)}")
    if shape is not None and tuple(x.shape[1:]) != shape:
        raise InputError(f"SAV features are {tuple(x.shape[1:])} per example; this classifier reads {shape}")
    return x


def fit_sav(features: torch.Tensor | np.ndarray, labels: Sequence[str], config: SAVConfig | None = None,
            model: str = "", task: str = "") -> SAVClassifier:
    """Choose the heads and class means from few-shot ``features`` [n, layers, heads, head_dim]
    (e.g. :func:`last_token_heads`) and their ``labels``."""
    config = config or SAVConfig()
    x = check_features(features)
    n, layers, heads, width = x.shape
    if len(labels) != n:
        raise InputError(f"SAV needs one label per example: {n} examples, {len(labels)} labels")
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise InputError(f"SAV needs examples of at least two classes; every label is {classes[0]!r}")
    k = config.heads_for(layers * heads)
    y = torch.tensor([classes.index(label) for label in labels])
    flat = x.reshape(n, layers * heads, width)
    means = torch.stack([flat[y == c].mean(0) for c in range(len(classes))])
    right = (cosine_to_means(flat, means).argmax(-1) == y[:, None]).sum(0)
    order = sorted(range(layers * heads), key=lambda i: (-int(right[i]), i))[:k]
    return SAVClassifier(classes, [(i // heads, i % heads) for i in order], means[:, order].clone(),
                         (right.float() / n).reshape(layers, heads).numpy(), config, n, model, task)


def head_count(session) -> int:
    """Attention heads per decoder layer of the session's language model."""
    return int(session.model.config.get_text_config().num_attention_heads)


def capture_heads(session, inputs: dict) -> torch.Tensor:
    """One pass over ``inputs``; every head's output (its slice of the ``o_proj`` input) at every
    position: [batch, seq, layers, heads, head_dim], float32 on the CPU. Read only."""
    kept: dict[int, torch.Tensor] = {}
    layers = session.n_layers

    def keep(layer: int) -> Callable[[torch.Tensor], None]:
        return lambda value: kept.__setitem__(layer, value.detach().float().cpu().clone())
    reads = [read("attention_output", i, keep(i)) for i in range(layers)]
    session.call(lambda: session.model(**inputs), reads)
    stacked = torch.stack([kept[i] for i in range(layers)], dim=2)  # [batch, seq, layers, width]
    heads = head_count(session)
    if stacked.shape[-1] % heads:
        raise InputError(f"the attention output width {stacked.shape[-1]} does not split into {heads} heads")
    return stacked.reshape(*stacked.shape[:3], heads, stacked.shape[-1] // heads)


def last_token_heads(session, images: Sequence, prompts: Sequence[str], batch: int = 32) -> torch.Tensor:
    """Every head's output at the last prompt position of each (image, prompt) pair:
    [n, layers, heads, head_dim] (batches are left-padded, so the last position is each row's own)."""
    if len(images) != len(prompts) or not prompts:
        raise InputError(f"give one prompt per image (got {len(images)} images and {len(prompts)} prompts)")
    parts = [capture_heads(session, session.batch_inputs(list(images[s:s + batch]), list(prompts[s:s + batch])))[:, -1]
             for s in range(0, len(prompts), batch)]
    return torch.cat(parts)


__all__ = ["PAPER_FRACTION", "PAPER_SHOTS", "SAVClassifier", "SAVConfig", "capture_heads", "fit_sav",
           "last_token_heads", "majority"]
