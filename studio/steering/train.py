"""Train a steering vector toward the image: one fixed vector per chosen layer, the same for
every item, fitted by gradient descent on conflict items and their matched twins.

Why: in the embedded 4-layer model the side of a conflict is decided item by item (which
claimed value gets copied into the answer), so the mean difference of image- and
text-following states moves answers only part of the way before it costs accuracy on
matched items (model card). A vector trained for the job finds a soft down-weighting of the
text claim instead. The objective follows BiPO (Cao et al. 2024, "Personalized Steering of
Large Language Models via Bi-directional Preference Optimization") in spirit, with
cross-entropy in place of its preference loss: ``+v`` should answer a conflict from the
image and ``-v`` from the text, and both should keep a matched twin (the same item with a
true claim) right, with weight ``matched_weight``. Conflicts whose bare question the model
gets wrong from the image are left out (``answerable_only``): their image answer is one the
model cannot see, and pushing toward it teaches avoiding the claimed value, not reading the image.

The fit adds the vectors through request-scoped interventions with gradients on
(:meth:`ModelSession.call` with ``grad``), through the frozen model; the vector it returns is applied like any other, through
the same interventions (:mod:`studio.steering.vectors`).
"""
from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from studio.engine.errors import InputError
from studio.interventions import Intervention
from studio.steering.preference import image_answerable
from studio.steering.vectors import Positions, check_positions, text_mask
from studio.world.conflict import ConflictItem
from studio.world.render import render


@dataclass(frozen=True)
class VectorConfig:
    """How to train: the defaults reproduce the shipped vector (model card)."""

    positions: Positions = "prompt"
    items: int = 600
    steps: int = 144
    batch: int = 25
    lr: float = 1.0
    matched_weight: float = 6.0
    bidirectional: float = 1.0
    answerable_only: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check_positions(self.positions)
        if min(self.items, self.steps, self.batch) < 1 or self.lr <= 0 \
                or min(self.matched_weight, self.bidirectional) < 0:
            raise InputError("items, steps and batch must be positive, lr positive, weights not negative")


@contextmanager
def frozen(model: torch.nn.Module) -> Iterator[None]:
    """Parameters need no gradient inside the block (only the vector learns); restored after."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _first_token(session, word: str) -> int:
    with session.text_lock:
        return session.tokenizer(word, add_special_tokens=False)["input_ids"][0]


def _batches(session, items: list[ConflictItem], config: VectorConfig) -> list[tuple]:
    """(inputs, image targets, text targets, position mask, weights) per batch of conflicts and
    their matched twins."""
    out = []
    for start in range(0, len(items), config.batch):
        chunk = items[start:start + config.batch]
        twins = [dataclasses.replace(i, text_answer=i.image_answer) for i in chunk]
        both = chunk + twins
        inputs = session.batch_inputs([render(i.scene) for i in both], [i.prompt for i in both])
        image = torch.tensor([_first_token(session, i.image_answer) for i in both])
        text = torch.tensor([_first_token(session, i.text_answer) for i in both])
        if config.positions == "all":
            mask = torch.ones_like(inputs["input_ids"], dtype=torch.bool)
        else:
            mask = text_mask(session, inputs["input_ids"])
        weights = torch.tensor([1.0] * len(chunk) + [config.matched_weight] * len(twins))
        out.append((inputs, image.to(session.device), text.to(session.device),
                    mask[..., None].float(), weights.to(session.device)))
    return out


def train_vector(session, items: list[ConflictItem], layers: list[int], config: VectorConfig = VectorConfig(),
                 progress: bool = True) -> torch.Tensor:
    """Steering vectors [n_layers, d] trained on conflict ``items`` (zero rows outside ``layers``)."""
    from tqdm.auto import tqdm
    modules = session.adapter.decoder_layers()
    if not layers or any(not 0 <= layer < len(modules) for layer in layers):
        raise InputError(f"layers must be within 0..{len(modules) - 1}; got {layers}")
    if not any(i.conflict for i in items):
        raise InputError("training a steering vector needs conflict items")
    if config.answerable_only:
        items = [i for i, ok in zip(items, image_answerable(session, items)) if ok]
        if not items:
            raise InputError("the model answers none of these items right from the image alone: "
                             "there is no image side to steer toward")
    items = list(items)
    random.Random(config.seed).shuffle(items)
    hidden = session.adapter.final_norm().weight.shape[0]
    torch.manual_seed(config.seed)
    vectors = {layer: torch.zeros(hidden, device=session.device, requires_grad=True) for layer in layers}
    optimiser = torch.optim.Adam(list(vectors.values()), lr=config.lr)
    with session.lock, frozen(session.model):
        batches = _batches(session, items, config)
        bar = tqdm(range(config.steps), desc="steering vector", disable=not progress)
        for step in bar:
            inputs, image, text, mask, weights = batches[step % len(batches)]
            loss = _loss(session, vectors, inputs, mask, 1.0, image, weights)
            if config.bidirectional:
                loss = loss + config.bidirectional * _loss(session, vectors, inputs, mask, -1.0, text, weights)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    out = torch.zeros(len(modules), hidden)
    for layer, vector in vectors.items():
        out[layer] = vector.detach().float().cpu()
    return out


def _loss(session, vectors: dict[int, torch.Tensor], inputs: dict, mask: torch.Tensor, sign: float,
          targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted cross-entropy of the first answer token with ``sign`` × the vectors added."""
    def add(layer: int):
        return lambda hidden: hidden + (sign * mask * vectors[layer]).to(hidden.dtype)
    edits = [Intervention("residual", layer, add(layer)) for layer in vectors]
    logits = session.call(lambda: session.model(**inputs).logits[:, -1].float(), edits, grad=True)
    return (F.cross_entropy(logits, targets, reduction="none") * weights).sum() / weights.sum()
