"""Does the world model know when to stop? The EOS decision measured against ground truth, and
the paper's Selective EOS Supervision as a fine-tune.

After Yue, Zhang & Jin (ACL 2024), "Less is More: Mitigating Multimodal Hallucination from an
EOS Decision Perspective" (reference code: github.com/yuezih/less-is-more).

**Study** (:func:`study`). Each scene is captioned greedily through the ``eos`` probe, which
gives p(end) (EOS + full stop) at every layer and step. Against ground truth, a step is
*complete* when every true object kind has been named in the tokens before it: the first such
step is where the list should end. Scored steps are those up to and including the step where
the model took an end token (later steps are past the end). AUROC asks whether p(end) ranks the
complete step above the other steps of its caption pool, (a) against every other scored step
and (b) against the other *boundaries* only (steps right after an object word, where a list
can end at all; the harder test). Intervals resample captions (1000 times, seeded). The
phantom ring of the planted bias (:mod:`studio.world.scenes`) is checked for whether it comes
after a complete list.

**Fine-tune** (:func:`finetune`), the paper's Selective EOS Supervision: at answer positions
whose target is not an end token, the end tokens are left out of the softmax (their logits set
to -inf), so training never pushes p(end) down; at end targets the loss is plain cross-entropy;
averaged over answer tokens, as the reference code does. Departures, named: the end tokens are
EOS *and* the full stop (``ends="eos+stop"``; the world's captions end with ``.`` then EOS, so
the decision is taken at ``.``; ``ends="eos"`` is the paper's literal EOS-only variant); the
data is the world's own training stream (its phase-2 mixture: 40% captions, with the planted
annotator bias that names phantom rings) rather than LLaVA's instruction data; the model is the
2.5M-parameter world model, continued from its shipped weights for a few hundred steps at a
small learning rate on a CPU. ``objective="plain"`` runs the same fine-tune with ordinary
cross-entropy, the control that separates the loss from the extra training.
:func:`compare_models` scores greedy captions of the same scenes before and after, with
paired-bootstrap 95% intervals of CHAIR_i, CHAIR_s and recall.

``python -m studio.world.eos_eval study|finetune|compare ...`` prints the figures.
"""
from __future__ import annotations

import argparse
import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from probes import ProbeRequest, run_probe
from probes.eos import stop_token_ids
from studio.benchmarks.intervals import paired_bootstrap
from studio.engine.errors import InputError
from studio.world.evaluate import chair_counts
from studio.world.language import CAPTION_PROMPT, TASK_WEIGHTS, kind_of, sample_example
from studio.world.modelkit import answer_labels, build_processor, chat_batch
from studio.world.render import render
from studio.world.scenes import COOCCUR_TARGET, Scene, sample_scene, sample_split
from studio.world.train import lr_schedule, optimizer_step

MAX_NEW_TOKENS = 48
N_BOOT = 1000


# ---------------------------------------------------------------- the study: steps against ground truth

def named_fraction(scene: Scene, steps: list[str]) -> list[float]:
    """Per step ``t``: the share of the scene's kinds named in the tokens taken before step ``t``."""
    named: set[str] = set()
    out = []
    for token in steps:
        out.append(len(named & scene.kinds) / len(scene.kinds))
        kind = kind_of(token)
        if kind:
            named.add(kind)
    return out


def complete_step(scene: Scene, steps: list[str]) -> int | None:
    """The first step at which every true kind has been named before it (None if never)."""
    return next((t for t, share in enumerate(named_fraction(scene, steps)) if share == 1.0), None)


def first_end(step_ids: list[int], end_ids: list[int]) -> int:
    """The step where the model took its first end token (the last step if it took none)."""
    return next((t for t, i in enumerate(step_ids) if i in end_ids), len(step_ids) - 1)


@dataclass
class CaptionSteps:
    """One caption read step by step: ``p_end`` [L, scored steps], the complete step (None when
    the caption misses an object), the boundary steps, and the phantom mentions' placement."""

    seed: int
    steps: list[str]
    p_end: np.ndarray
    named: list[float]
    complete: int | None
    boundaries: list[int]
    phantoms_after_complete: list[bool] = field(default_factory=list)
    ring_phantoms_after_complete: list[bool] = field(default_factory=list)


def caption_steps(scene: Scene, steps: list[str], step_ids: list[int], end_ids: list[int],
                  p_end: np.ndarray) -> CaptionSteps:
    """Score one caption's steps (``p_end`` [L, T] from the ``eos`` probe) against its scene."""
    last = first_end(step_ids, end_ids)
    scored = steps[:last + 1]
    complete = complete_step(scene, scored)
    boundaries = [t for t in range(1, last + 1) if kind_of(steps[t - 1])]
    mentions = [(t, kind) for t, token in enumerate(steps[:last]) if (kind := kind_of(token))]
    phantoms = [(t, kind) for t, kind in mentions if kind not in scene.kinds]
    after = [complete is not None and t >= complete for t, _ in phantoms]
    return CaptionSteps(seed=scene.seed, steps=scored, p_end=p_end[:, :last + 1], named=named_fraction(scene, scored),
                        complete=complete, boundaries=boundaries, phantoms_after_complete=after,
                        ring_phantoms_after_complete=[a for a, (_, k) in zip(after, phantoms) if k == COOCCUR_TARGET])


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counted half (Mann-Whitney); NaN if a side is empty."""
    if len(positive) == 0 or len(negative) == 0:
        return float("nan")
    neg = np.sort(np.asarray(negative, dtype=float))
    pos = np.asarray(positive, dtype=float)
    below = np.searchsorted(neg, pos, side="left")
    ties = np.searchsorted(neg, pos, side="right") - below
    return float((below + 0.5 * ties).sum() / (len(pos) * len(neg)))


NEGATIVES = ("all", "boundary", "incomplete")


def negative_steps(c: CaptionSteps, negatives: str) -> list[int]:
    """The steps scored against the complete one: ``all`` scored steps, the ``boundary`` steps (right
    after an object word), or the ``incomplete`` boundaries (before the list is complete)."""
    if negatives == "all":
        steps = list(range(c.p_end.shape[1]))
    elif negatives == "boundary":
        steps = c.boundaries
    elif negatives == "incomplete":
        steps = [t for t in c.boundaries if c.complete is None or t < c.complete]
    else:
        raise InputError(f"negatives must be one of {', '.join(NEGATIVES)}; got {negatives!r}")
    return [t for t in steps if t != c.complete]


def step_scores(captions: list[CaptionSteps], layer: int, negatives: str) -> tuple[np.ndarray, np.ndarray]:
    """(p(end) at the complete steps, p(end) at the ``negatives`` steps) pooled over ``captions``."""
    pos = [float(c.p_end[layer, c.complete]) for c in captions if c.complete is not None]
    neg = [float(c.p_end[layer, t]) for c in captions for t in negative_steps(c, negatives)]
    return np.asarray(pos), np.asarray(neg)


def bootstrap_auroc(captions: list[CaptionSteps], layer: int, negatives: str, n_boot: int = N_BOOT,
                    seed: int = 0) -> tuple[float, list[float]]:
    """AUROC of p(end) at ``layer`` for the complete step, and its 95% interval over caption resamples."""
    point = auroc(*step_scores(captions, layer, negatives))
    rng = np.random.default_rng(seed)
    samples = np.array([auroc(*step_scores([captions[i] for i in rng.integers(0, len(captions), len(captions))],
                                           layer, negatives)) for _ in range(n_boot)])
    if np.all(np.isnan(samples)):
        return point, [float("nan"), float("nan")]
    return point, [float(v) for v in np.nanpercentile(samples, [2.5, 97.5])]


def mean_interval(values: list[float], n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, list[float]]:
    """Mean of ``values`` and its 95% bootstrap interval (NaN when empty)."""
    if not values:
        return float("nan"), [float("nan"), float("nan")]
    arr = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = [arr[rng.integers(0, len(arr), len(arr))].mean() for _ in range(n_boot)]
    return float(arr.mean()), [float(v) for v in np.percentile(means, [2.5, 97.5])]


@dataclass
class SplitStudy:
    """The EOS-decision figures of one split (see :func:`summarise`)."""

    split: str
    n_captions: int
    n_complete: int
    auroc: dict[str, float]
    auroc_ci: dict[str, list[float]]
    auroc_by_layer: dict[str, list[float]]
    stopped_at_complete: float
    p_end_at_complete_stopped: float
    p_end_at_complete_went_on: float
    p_end_at_complete_went_on_ci: list[float]
    p_end_at_complete_by_layer: list[float]
    ring_phantoms: int
    ring_phantoms_after_complete: int
    phantoms: int
    phantoms_after_complete: int


def read_caption(session, scene: Scene) -> CaptionSteps:
    """Caption ``scene`` greedily through the ``eos`` probe and score its steps."""
    result: Any = run_probe(session, "eos", ProbeRequest(render(scene), CAPTION_PROMPT, MAX_NEW_TOKENS))
    return caption_steps(scene, result.steps, result.step_ids.tolist(), result.end_ids.tolist(), result.p_end)


def scene_figure(session, scene: Scene) -> Any:
    """The ``eos`` probe's p(end) curve for ``scene``'s caption with the share of ground truth named."""
    from views.eos import end_curve
    result: Any = run_probe(session, "eos", ProbeRequest(render(scene), CAPTION_PROMPT, MAX_NEW_TOKENS))
    return end_curve(result, named_fraction(scene, result.steps))


def summarise(split: str, captions: list[CaptionSteps], n_boot: int = N_BOOT) -> SplitStudy:
    """AUROCs (last layer with intervals; every layer as points), p(end) at the complete step for
    captions that stopped there and those that went on, and where phantoms fall."""
    layers = captions[0].p_end.shape[0]
    done = [c for c in captions if c.complete is not None]
    stopped = [c for c in done if c.complete == c.p_end.shape[1] - 1]
    went_on = [c for c in done if c.complete < c.p_end.shape[1] - 1]
    aurocs = {k: bootstrap_auroc(captions, layers - 1, k, n_boot) for k in NEGATIVES}
    on_mean, on_ci = mean_interval([float(c.p_end[-1, c.complete]) for c in went_on], n_boot)
    rings = [a for c in captions for a in c.ring_phantoms_after_complete]
    phantoms = [a for c in captions for a in c.phantoms_after_complete]
    return SplitStudy(
        split=split, n_captions=len(captions), n_complete=len(done),
        auroc={k: v[0] for k, v in aurocs.items()}, auroc_ci={k: v[1] for k, v in aurocs.items()},
        auroc_by_layer={k: [auroc(*step_scores(captions, la, k)) for la in range(layers)] for k in NEGATIVES},
        stopped_at_complete=len(stopped) / max(1, len(done)),
        p_end_at_complete_stopped=float(np.mean([c.p_end[-1, c.complete] for c in stopped])) if stopped else np.nan,
        p_end_at_complete_went_on=on_mean, p_end_at_complete_went_on_ci=on_ci,
        p_end_at_complete_by_layer=[float(np.mean([c.p_end[la, c.complete] for c in done])) if done else np.nan
                                    for la in range(layers)],
        ring_phantoms=len(rings), ring_phantoms_after_complete=sum(rings),
        phantoms=len(phantoms), phantoms_after_complete=sum(phantoms))


def study(session, split: str, n: int, start: int = 0, n_boot: int = N_BOOT) -> SplitStudy:
    """Caption ``n`` scenes of ``split`` (seeds ``start ..``) and summarise the EOS decision."""
    if n < 1:
        raise InputError(f"the study needs at least one scene; got n={n}")
    captions = [read_caption(session, s) for s in tqdm(sample_split(split, n, start), desc=f"eos {split}")]
    return summarise(split, captions, n_boot)


# ---------------------------------------------------------------- the fine-tune: Selective EOS Supervision

OBJECTIVES = ("selective", "plain")
ENDS = ("eos+stop", "eos")


def selective_eos_loss(logits: torch.Tensor, labels: torch.Tensor, end_ids: list[int]) -> torch.Tensor:
    """Selective EOS Supervision on [B, S, V] logits and [B, S] labels (-100 = not trained): at
    positions whose target is not an end token the end tokens leave the softmax; at end targets
    plain cross-entropy. Mean over trained tokens, as the reference code."""
    shifted, targets = logits[:, :-1].float(), labels[:, 1:]
    valid = targets != -100
    rows, wanted = shifted[valid], targets[valid]
    masked = torch.zeros_like(rows, dtype=torch.bool)
    masked[:, end_ids] = True
    masked.scatter_(1, wanted[:, None], False)  # a target is never left out of its own softmax
    return F.cross_entropy(rows.masked_fill(masked, float("-inf")), wanted)


def plain_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Ordinary next-token cross-entropy, mean over trained tokens (the control)."""
    shifted, targets = logits[:, :-1].float(), labels[:, 1:]
    return F.cross_entropy(shifted.transpose(1, 2), targets, ignore_index=-100)


@dataclass
class FinetuneConfig:
    """A short continued run from a trained world model (defaults fixed before any result)."""

    objective: str = "selective"
    ends: str = "eos+stop"
    steps: int = 200
    batch_size: int = 32
    lr: float = 2e-4
    warmup: int = 20
    stream: int = 20  # the data stream's seed: apart from the training phases' streams (seed + 1 .. + 10)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES or self.ends not in ENDS:
            raise InputError(f"objective must be one of {OBJECTIVES} and ends one of {ENDS}")
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0 or self.warmup < 0:
            raise InputError("steps and batch size must be >= 1, lr > 0 and warmup >= 0")


def training_end_ids(tokenizer, vocab_size: int, ends: str) -> list[int]:
    """The tokenizer's EOS, and with ``ends="eos+stop"`` its full stop: the ids the loss spares."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return eos + ([i for i in stop_token_ids(tokenizer, vocab_size) if i not in eos] if ends == "eos+stop" else [])


def training_batch(processor, step: int, config: FinetuneConfig, rng: random.Random) -> dict:
    """One batch of the world's training stream (phase-2 mixture, biased captions included)."""
    scenes = [sample_scene(config.stream * 10**7 + step * config.batch_size + i, "train")
              for i in range(config.batch_size)]
    examples = [sample_example(s, rng, weights=TASK_WEIGHTS) for s in scenes]
    batch = chat_batch(processor, [render(s) for s in scenes], [e.prompt for e in examples],
                       [e.answer for e in examples])
    batch["labels"] = answer_labels(batch, processor.tokenizer)
    return dict(batch)


def finetune(config: FinetuneConfig, out_dir: str | Path, init_dir: str | Path | None = None,
             progress: bool = True) -> list[float]:
    """Continue the world model in ``init_dir`` (default: the shipped one) with ``config`` and save
    it to ``out_dir`` (safetensors, processor, ``finetune.json`` with the losses)."""
    from transformers import LlavaForConditionalGeneration

    from studio.engine.loading import OBJECTS_FILE, embedded_dir
    from studio.world.train import objects_record
    init = Path(init_dir) if init_dir else embedded_dir()
    torch.manual_seed(config.stream)
    model: Any = LlavaForConditionalGeneration.from_pretrained(init, use_safetensors=True).train()
    processor = build_processor()
    end_ids = training_end_ids(processor.tokenizer, model.lm_head.out_features, config.ends)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    rng, losses = random.Random(config.stream), []
    for step in tqdm(range(config.steps), desc=f"{config.objective} fine-tune", disable=not progress):
        batch = training_batch(processor, step, config, rng)
        labels = batch.pop("labels")
        logits = model(**batch).logits
        loss = selective_eos_loss(logits, labels, end_ids) if config.objective == "selective" else \
            plain_loss(logits, labels)
        optimizer_step(opt, loss, config.lr * lr_schedule(step, config.steps, config.warmup))
        losses.append(loss.item())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    (out / OBJECTS_FILE).write_text(json.dumps(objects_record(), indent=1))
    (out / "finetune.json").write_text(json.dumps({"config": asdict(config), "init": str(init), "end_ids": end_ids,
                                                   "losses": losses}, indent=1))
    return losses


# ---------------------------------------------------------------- before vs after: CHAIR with paired intervals

def caption_counts(session, scenes: list[Scene], batch: int = 50) -> list[dict[str, float]]:
    """Per scene: hallucinated mentions, mentions, recalled and true kinds of its greedy caption."""
    rows = []
    for i in range(0, len(scenes), batch):
        part = scenes[i:i + batch]
        texts = session.answer_batch([render(s) for s in part], [CAPTION_PROMPT] * len(part), MAX_NEW_TOKENS)
        for scene, text in zip(part, texts):
            h, m, r = chair_counts(scene, text)
            rows.append({"halluc": h, "mentions": m, "recalled": r, "objects": len(scene.kinds), "bad": float(h > 0)})
    return rows


def chair_metrics(total: dict[str, float]) -> dict[str, float]:
    """CHAIR_i, CHAIR_s and recall from summed :func:`caption_counts`."""
    return {"chair_i": total["halluc"] / max(1, total["mentions"]), "chair_s": total["bad"] / max(1, total["captions"]),
            "recall": total["recalled"] / max(1, total["objects"])}


def compare_models(sessions: dict[str, Any], splits: list[str], n: int, n_boot: int = N_BOOT) -> dict:
    """Greedy CHAIR of each model against the first (the baseline), same scenes, paired 95% intervals."""
    if n < 1 or not sessions:
        raise InputError(f"the comparison needs at least one scene and one model; got n={n}")
    names = list(sessions)
    report: dict = {}
    for split in splits:
        scenes = sample_split(split, n)
        counts = {k: [{**c, "captions": 1.0} for c in caption_counts(s, scenes)] for k, s in sessions.items()}
        base = counts[names[0]]
        report[split] = {k: asdict(paired_bootstrap(counts[k], base, chair_metrics, n_boot=n_boot)) for k in names}
    return report


# ---------------------------------------------------------------- command line

def _print_study(s: SplitStudy) -> None:
    print(f"{s.split}: {s.n_captions} captions, {s.n_complete} name every object; "
          f"stopped at the complete step {s.stopped_at_complete:.3f}")
    for k in NEGATIVES:
        print(f"  AUROC of p(end), complete step vs {k} other steps: {s.auroc[k]:.3f} "
              f"[{s.auroc_ci[k][0]:.3f}, {s.auroc_ci[k][1]:.3f}]; by layer {[round(v, 3) for v in s.auroc_by_layer[k]]}")
    print(f"  p(end) at the complete step: stopped {s.p_end_at_complete_stopped:.3f}, went on "
          f"{s.p_end_at_complete_went_on:.3f} [{s.p_end_at_complete_went_on_ci[0]:.3f}, "
          f"{s.p_end_at_complete_went_on_ci[1]:.3f}]; mean by layer {[round(v, 3) for v in s.p_end_at_complete_by_layer]}")
    print(f"  phantom rings {s.ring_phantoms}, after a complete list {s.ring_phantoms_after_complete}; "
          f"all phantoms {s.phantoms}, after a complete list {s.phantoms_after_complete}")


def _print_comparison(report: dict) -> None:
    for split, models in report.items():
        for name, iv in models.items():
            cells = [f"{m} {iv['metrics'][m]:.3f} ({iv['diff_to_greedy'][m]:+.3f} "
                     f"[{iv['diff_ci'][m][0]:+.3f}, {iv['diff_ci'][m][1]:+.3f}])" for m in ("chair_i", "chair_s", "recall")]
            print(f"{split:8s} {name:24s} " + "  ".join(cells))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m studio.world.eos_eval", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("study", help="AUROC of p(end) at the step where the list should end")
    s.add_argument("--model", default=None, help="a world-model folder (default: the embedded model)")
    s.add_argument("--splits", default="cooccur,neutral")
    s.add_argument("--n", type=int, default=300)
    s.add_argument("--json", default=None)
    s.add_argument("--figure", default=None, help="write the first scene's p(end) and named-share curve (HTML)")
    f = sub.add_parser("finetune", help="Selective EOS Supervision (or the plain control) from the shipped model")
    f.add_argument("--out", required=True)
    for name, value in asdict(FinetuneConfig()).items():
        f.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    c = sub.add_parser("compare", help="greedy CHAIR before vs after, paired bootstrap")
    c.add_argument("--models", required=True, help="comma-separated world-model folders ('embedded': the shipped one)")
    c.add_argument("--baseline", default="embedded", help="the model the others are paired with")
    c.add_argument("--splits", default="cooccur,neutral")
    c.add_argument("--n", type=int, default=300)
    c.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    _run(args)


def _run(args: argparse.Namespace) -> None:
    from studio.engine.session import ModelSession
    if args.command == "finetune":
        config = FinetuneConfig(**{k: getattr(args, k) for k in asdict(FinetuneConfig())})
        losses = finetune(config, args.out)
        print(f"loss: first 10 steps {np.mean(losses[:10]):.4f}, last 10 {np.mean(losses[-10:]):.4f}; saved {args.out}")
        return
    if args.command == "study":
        session = ModelSession.load(args.model, device="cpu")
        splits = args.splits.split(",")
        if args.figure:
            scene_figure(session, sample_split(splits[0], 1)[0]).write_html(args.figure)
        report: Any = [study(session, split, args.n) for split in splits]
        for item in report:
            _print_study(item)
        report = [asdict(item) for item in report]
    else:
        names = [args.baseline] + [m for m in args.models.split(",") if m != args.baseline]
        sessions = {m: ModelSession.load(m, device="cpu") for m in names}
        report = compare_models(sessions, args.splits.split(","), args.n)
        _print_comparison(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
