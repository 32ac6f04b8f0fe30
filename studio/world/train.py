"""Train the embedded world model from scratch, reproducibly (fixed seed, fixed data stream).

Phases, because a vision tower trained end to end from captions alone learns slowly on a
CPU budget: (1) the vision tower learns to classify every grid cell's kind, colour and
size from its patch features; (2) the whole LLaVA model learns captions and questions with
the loss on answer tokens only; (3) a question phase with more existence, colour and
position questions and the loss averaged per example, because in phase 2 the token-averaged
loss lets long captions drown one-word answers (measured: existence questions at chance);
(4) text claims in the prompt that may conflict with the image (modality preference).
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from studio.engine.errors import InputError
from studio.engine.loading import OBJECTS_FILE
from studio.world import conflict
from studio.world.language import KINDS, QUESTION_WEIGHTS, TASK_WEIGHTS, sample_example
from studio.world.modelkit import (
    WorldModelSize,
    answer_labels,
    base_vocab_size,
    build_model,
    build_processor,
    chat_batch,
    extend_vocabulary,
)
from studio.world.render import render
from studio.world.scenes import COLOURS, GRID, SIZES, Scene, sample_scene

CONTEXT_SHARE = 0.4


@dataclass
class TrainConfig:
    """How to train; the defaults reproduce the shipped model."""

    seed: int = 0
    vision_steps: int = 600
    joint_steps: int = 4000
    question_steps: tuple[int, ...] = (1500, 2000)
    context_steps: int = 1500
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 100
    device: str = "cpu"
    size: WorldModelSize = field(default_factory=WorldModelSize)

    @classmethod
    def quick(cls, seed: int = 0, device: str = "cpu") -> "TrainConfig":
        """A tiny model for a few steps: a smoke test that the loss falls (seconds on a CPU)."""
        return cls(seed=seed, vision_steps=15, joint_steps=60, question_steps=(10,), context_steps=10,
                   batch_size=8, lr=3e-3, warmup=5, device=device,
                   size=WorldModelSize(48, 1, 2, 96, 48, 1, 2, 96))

    def __post_init__(self) -> None:
        if min(self.vision_steps, self.context_steps, *self.question_steps) < 0 or self.joint_steps < 1 \
                or self.batch_size < 1 or self.lr <= 0:
            raise InputError("vision steps must be >= 0, joint steps and batch size >= 1, and lr > 0")


@dataclass
class TrainLog:
    """Losses recorded every ``every`` steps, per phase."""

    vision: list[float] = field(default_factory=list)
    joint: list[float] = field(default_factory=list)
    questions: list[float] = field(default_factory=list)
    context: list[float] = field(default_factory=list)
    every: int = 10


def _scenes(step: int, batch: int, seed: int) -> list[Scene]:
    return [sample_scene(seed * 10**7 + step * batch + i, "train") for i in range(batch)]


class CellHeads(torch.nn.Module):
    """Linear read-outs of each grid cell's kind/colour/size (index 0 = empty) from pooled patches."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.kind = torch.nn.Linear(width, len(KINDS) + 1)
        self.colour = torch.nn.Linear(width, len(COLOURS) + 1)
        self.size = torch.nn.Linear(width, len(SIZES) + 1)


def _cell_targets(scenes: list[Scene]) -> torch.Tensor:
    targets = torch.zeros(len(scenes), GRID * GRID, 3, dtype=torch.long)
    for b, scene in enumerate(scenes):
        for o in scene.objects:
            targets[b, o.row * GRID + o.col] = torch.tensor(
                [KINDS.index(o.kind) + 1, COLOURS.index(o.colour) + 1, SIZES.index(o.size) + 1])
    return targets


def _cell_features(model, pixel_values: torch.Tensor) -> torch.Tensor:
    hidden = model.model.vision_tower(pixel_values).last_hidden_state[:, 1:]
    b, n, d = hidden.shape
    side = int(math.isqrt(n))
    grid = hidden.reshape(b, side, side, d).permute(0, 3, 1, 2)
    return F.avg_pool2d(grid, side // GRID).flatten(2).transpose(1, 2)


def lr_schedule(step: int, total: int, warmup: int) -> float:
    """The learning-rate factor at ``step``: linear warm-up, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _joint_batch(processor, scenes: list[Scene], rng: random.Random, device: str,
                 weights: tuple[float, ...] = TASK_WEIGHTS, context_share: float = 0.0) -> dict:
    examples = [conflict.training_example(s, rng) if context_share and rng.random() < context_share
                else sample_example(s, rng, weights=weights) for s in scenes]
    batch = chat_batch(processor, [render(s) for s in scenes], [e.prompt for e in examples],
                       [e.answer for e in examples])
    batch["labels"] = answer_labels(batch, processor.tokenizer)
    return {k: v.to(device) for k, v in batch.items()}


def train(config: TrainConfig, out_dir: str | Path | None = None,
          on_step: Callable[[str, int, float], None] | None = None, progress: bool = True):
    """Train a world model; save it (safetensors + processor) to ``out_dir`` when given.

    Returns ``(model, processor, log)``.
    """
    torch.manual_seed(config.seed)
    processor = build_processor()
    model: Any = build_model(processor.tokenizer, config.size, seed=config.seed,
                             vocab_size=base_vocab_size(processor.tokenizer))
    model = model.to(config.device)
    model.train()
    log = TrainLog()

    heads = CellHeads(config.size.vision_hidden).to(config.device)
    params = list(model.model.vision_tower.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.01)
    bar = tqdm(range(config.vision_steps), desc="vision cells", disable=not progress)
    for step in bar:
        scenes = _scenes(step, config.batch_size, config.seed + 1)
        pixels = processor.image_processor([render(s) for s in scenes], return_tensors="pt")["pixel_values"]
        feats = _cell_features(model, pixels.to(config.device))
        t = _cell_targets(scenes).to(config.device)
        loss = cast(torch.Tensor, sum(F.cross_entropy(h(feats).flatten(0, 1), t[..., i].flatten())
                                      for i, h in enumerate((heads.kind, heads.colour, heads.size))))
        optimizer_step(opt, loss, config.lr * lr_schedule(step, config.vision_steps, config.warmup))
        _record(log.vision, log.every, step, loss.item(), bar, on_step, "vision")

    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    rng = random.Random(config.seed)
    bar = tqdm(range(config.joint_steps), desc="captions+questions", disable=not progress)
    for step in bar:
        batch = _joint_batch(processor, _scenes(step, config.batch_size, config.seed + 2), rng, config.device)
        loss = model(**batch).loss
        optimizer_step(opt, loss, config.lr * lr_schedule(step, config.joint_steps, config.warmup))
        _record(log.joint, log.every, step, loss.item(), bar, on_step, "joint")

    for round_index in range(len(config.question_steps)):
        train_questions(model, processor, config, log, round_index, progress=progress, on_step=on_step)
    if config.context_steps:
        train_context(model, processor, config, log, progress=progress, on_step=on_step)
    model.eval()
    if out_dir is not None:
        save(model, processor, out_dir, config, log)
    return model, processor, log


def per_example_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over each example's answer tokens, then over the batch."""
    shifted, targets = logits[:, :-1].float(), labels[:, 1:]
    tokens = F.cross_entropy(shifted.transpose(1, 2), targets, ignore_index=-100, reduction="none")
    counts = (targets != -100).sum(1).clamp(min=1)
    return (tokens.sum(1) / counts).mean()


def train_questions(model, processor, config: TrainConfig, log: TrainLog, round_index: int = 0,
                    progress: bool = True, on_step: Callable[[str, int, float], None] | None = None) -> None:
    """Phase 3, one round on an already trained model: question-heavy mixture, per-example
    loss, a fresh optimiser and cosine schedule, its own data stream (seed + 3 + round)."""
    model.train()
    steps = config.question_steps[round_index]
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr / 2, weight_decay=0.01)
    stream = config.seed + 3 + round_index
    rng = random.Random(stream)
    bar = tqdm(range(steps), desc=f"questions {round_index + 1}", disable=not progress)
    for step in bar:
        batch = _joint_batch(processor, _scenes(step, config.batch_size, stream), rng, config.device,
                             QUESTION_WEIGHTS)
        labels = batch.pop("labels")
        loss = per_example_loss(model(**batch).logits, labels)
        optimizer_step(opt, loss, config.lr / 2 * lr_schedule(step, steps, config.warmup))
        _record(log.questions, log.every, step, loss.item(), bar, on_step, "questions")


def train_context(model, processor, config: TrainConfig, log: TrainLog, progress: bool = True,
                  on_step: Callable[[str, int, float], None] | None = None) -> None:
    """Phase 4: the conflict words join the vocabulary and the model learns text claims in the
    prompt (:mod:`studio.world.conflict`, 40% of examples) beside the question mixture, so it
    acquires a measurable, steerable modality preference; per-example loss, stream seed + 10."""
    torch.manual_seed(config.seed + 10)
    extend_vocabulary(model, len(processor.tokenizer), seed=config.seed)
    model.to(config.device).train()
    steps = config.context_steps
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr / 2, weight_decay=0.01)
    stream = config.seed + 10
    rng = random.Random(stream)
    bar = tqdm(range(steps), desc="conflict context", disable=not progress)
    for step in bar:
        batch = _joint_batch(processor, _scenes(step, config.batch_size, stream), rng, config.device,
                             QUESTION_WEIGHTS, context_share=CONTEXT_SHARE)
        labels = batch.pop("labels")
        loss = per_example_loss(model(**batch).logits, labels)
        optimizer_step(opt, loss, config.lr / 2 * lr_schedule(step, steps, config.warmup))
        _record(log.context, log.every, step, loss.item(), bar, on_step, "context")


def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor, lr: float) -> None:
    """One update at learning rate ``lr``, gradients clipped to norm 1."""
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
    opt.step()


def _record(losses: list[float], every: int, step: int, loss: float, bar, on_step, phase: str) -> None:
    if step % every == 0:
        losses.append(loss)
        bar.set_postfix(loss=f"{loss:.3f}")
    if on_step is not None:
        on_step(phase, step, loss)


def continue_with_context(init_dir: str | Path, config: TrainConfig, out_dir: str | Path,
                          progress: bool = True) -> TrainLog:
    """Run only phase 4 on a model already trained through phase 3 (saved in ``init_dir``)
    and save the result; the same computation as the last phase of :func:`train`."""
    import json

    from transformers import LlavaForConditionalGeneration
    init = Path(init_dir)
    model: Any = LlavaForConditionalGeneration.from_pretrained(init, use_safetensors=True)
    model = model.to(config.device)
    processor = build_processor()
    record = json.loads((init / "training.json").read_text())
    if record.get("context_loss"):
        raise InputError(f"{init} has already been through the conflict phase")
    log = TrainLog(vision=record["vision_loss"], joint=record["joint_loss"], questions=record["question_loss"])
    train_context(model, processor, config, log, progress=progress)
    model.eval()
    save(model, processor, out_dir, config, log)
    return log


def objects_record() -> dict:
    """The object words of the world, saved beside a world model (``objects.json``): the detector
    and ground-truth tools read a model's object vocabulary from there, never from world code."""
    return {"objects": list(KINDS), "source": "vlm-studio scene world (studio/world/scenes.py KINDS)"}


def save(model, processor, out_dir: str | Path, config: TrainConfig, log: TrainLog) -> Path:
    """Write the model (safetensors only), processor and training record into ``out_dir``."""
    import json
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    record = {"train_config": asdict(config), "loss_every": log.every,
              "vision_loss": log.vision, "joint_loss": log.joint, "question_loss": log.questions, "context_loss": log.context}
    (out / "training.json").write_text(json.dumps(record, indent=1))
    (out / OBJECTS_FILE).write_text(json.dumps(objects_record(), indent=1))
    return out
