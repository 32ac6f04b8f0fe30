"""Sparse Attention Vectors (:mod:`studio.heads.sav`) scored on the scene world's ground truth.

Each task fits SAVs on few-shot examples (the paper's 20 per class) from scenes apart from the
held-out ones it is scored on, and compares with what the model itself does on the same items,
with 95% bootstrap intervals over held-out scenes (1000 resamples, paired where two methods
are compared). Question tasks also compare with a logistic-regression probe on all heads
fitted on the same few-shot examples, which tells whether a miss is the method's (the answer
is linearly in the heads, the cosine vote misses it) or the heads'.

- ``exist``: "is there a <kind> ?" about one present and one absent kind per scene, fitted on
  neutral scenes (a random absent kind), scored on neutral and on cooccur (where the absent kind
  asked is always the ring the captions hallucinate); labels yes / no; against the model's
  own answer.
- ``colour`` / ``size``: "what color / size is the <kind> ?"; labels the true value; against
  the model's answer. Fitted on neutral scenes; scored on neutral and on colour_prior (every
  object in an unusual colour, where the model's language prior misleads it).
- ``preference``: uninstructed modality-conflict items (:mod:`studio.world.conflict`); label =
  the side the model's own answer follows (``item.follows``; "other" answers dropped); SAV
  predicts it from the prompt alone. The model follows the text about 95% of the time, so the
  metric is balanced accuracy (a constant guess scores 0.5), on ``4 n`` held-out items.
- ``mention``: object words in the model's captions (as :mod:`studio.world.detect_eval`);
  label real / hallucinated; features at the word's own position (the sequence then ends with
  the word, as the paper classifies a given claim at its last token); AUROC of SAV's share of
  votes for "real" against the detector's two scores on the same mentions; few-shot scenes use
  detector seed 1, held-out ones seed 2. On cooccur every hallucination is a phantom ring and no
  real object is a ring, so the word alone nearly separates them; the word-controlled test is
  ring mentions only on colour_prior, where rings are both real and phantom. Both also compare
  with the caption's text alone (:func:`text_cue`: the planted phantom is a ring named last,
  after a cross), which SAV's features at the word can read without the image.

Departures from the paper: the world's tasks replace its benchmarks; with the embedded
model's 16 heads, ``k`` is reported at the paper's fraction of heads (1 head) and, as fixed
settings chosen before measuring, at 3 heads and at all 16; for AUROC the score is the vote
share (the reference's ``mllm_classify_with_counts``), which with one head is the 0/1 vote.

``python -m studio.world.sav_eval --n 200`` prints the table.
"""
from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from probes import ProbeRequest, run_probe
from probes.runs import get_run
from studio.concepts.activations import model_fingerprint
from studio.engine.errors import InputError
from studio.heads.sav import PAPER_SHOTS, SAVClassifier, SAVConfig, capture_heads, fit_sav, last_token_heads
from studio.steering.preference import answer_items
from studio.world.conflict import sample_items
from studio.world.detect_eval import auroc
from studio.world.language import CAPTION_PROMPT, exist_question
from studio.world.render import render
from studio.world.scenes import COOCCUR_TARGET, COOCCUR_TRIGGER, KINDS, Scene, sample_scene

FEW_SHOT_START = 200_000  # scene seeds of the few-shot pools; held-out items use seeds 0 .. n - 1
QUESTION_SEED_BASE = 5 * 10**9
MENTION_TRAIN_SEED, MENTION_TEST_SEED = 1, 2
K_SETTINGS: tuple[int | None, ...] = (None, 3, 16)  # None: the paper's fraction of heads
N_BOOT = 1000
MENTION_SCORES = ("internal_confidence", "contextual_similarity", "text cue")
PREFERENCE_POOL = 800  # the model follows the text ~95% of the time: enough items for 20 image-followers
PREFERENCE_TEST_FACTOR = 4  # held-out conflict items: 4 n, since the image-following side is rare
MENTION_POOL = 120  # caption scenes for 20 hallucinated mentions of every kind asked
POOL_SCENES = {"exist": 40, "colour": 400, "size": 200}  # enough few-shot scenes for 20 of every class


@dataclass
class Examples:
    """Labelled items: head features [n, layers, heads, head_dim], the scene of each (the
    bootstrap's unit), and what the model itself gives per item (answers or named scores)."""

    features: torch.Tensor
    labels: list[str]
    scenes: list[int]
    answers: list[str] = field(default_factory=list)
    scores: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Row:
    """One line of the table: SAV's metric, the comparison's, and their paired difference."""

    task: str
    split: str
    k: int
    n: int
    metric: str
    sav: float
    sav_ci: list[float]
    against: str
    other: float
    other_ci: list[float]
    diff: float
    diff_ci: list[float]
    heads: list[list[int]] = field(default_factory=list)


def question_items(task: str, split: str, n: int, start: int) -> list[tuple[Scene, str, str]]:
    """(scene, prompt, true label) for ``n`` scenes of ``split`` from seed ``start``."""
    items = []
    for seed in range(start, start + n):
        scene, rng = sample_scene(seed, split), random.Random(QUESTION_SEED_BASE + seed)
        if task == "exist":
            absent = [k for k in KINDS if k not in scene.kinds]
            missing = COOCCUR_TARGET if split == "cooccur" else rng.choice(absent)
            items += [(scene, exist_question(rng.choice(sorted(scene.kinds))), "yes"),
                      (scene, exist_question(missing), "no")]
            continue
        obj = rng.choice(scene.objects)
        verb = "color" if task == "colour" else "size"
        items.append((scene, f"what {verb} is the {obj.kind} ?", obj.colour if task == "colour" else obj.size))
    return items


def few_shot(labels: Sequence[str], shots: int = PAPER_SHOTS) -> list[int]:
    """Indices of the first ``shots`` items of every class."""
    taken: dict[str, int] = {}
    keep = []
    for i, label in enumerate(labels):
        if taken.get(label, 0) < shots:
            taken[label] = taken.get(label, 0) + 1
            keep.append(i)
    return keep


def question_examples(session, items: list[tuple[Scene, str, str]], ask: bool) -> Examples:
    """Features at the last prompt position; with ``ask``, the model's own first-word answers."""
    images, prompts = [render(s) for s, _, _ in items], [p for _, p, _ in items]
    answers = [a.split()[0] if a.split() else "" for a in session.answer_batch(images, prompts, 2)] if ask else []
    return Examples(last_token_heads(session, images, prompts), [lab for _, _, lab in items],
                    [s.seed for s, _, _ in items], answers)


def preference_examples(session, n: int, start: int) -> Examples:
    """Uninstructed conflict items labelled by the side the model's answer follows ("other" dropped)."""
    items = sample_items(n, "neutral", start=start)
    sides = [item.follows(a) for item, a in zip(items, answer_items(session, items))]
    kept = [(item, side) for item, side in zip(items, sides) if side != "other"]
    features = last_token_heads(session, [render(i.scene) for i, _ in kept], [i.prompt for i, _ in kept])
    return Examples(features, [side for _, side in kept], [i.scene.seed for i, _ in kept])


def text_cue(words: Sequence[str], m: int) -> float:
    """0 when mention ``m`` of the caption's object ``words`` looks like the planted phantom (a
    ring named last, after a cross), else 1: what the caption's text alone says, no image."""
    phantom = words[m] == COOCCUR_TARGET and m == len(words) - 1 and COOCCUR_TRIGGER in words[:m]
    return float(not phantom)


def mention_examples(session, split: str, n: int, seed: int, words: tuple[str, ...] = KINDS,
                     progress: bool = True) -> Examples:
    """Every mention of ``words`` in the captions of ``n`` scenes of ``split`` (the scenes of
    :func:`studio.world.detect_eval.scene_mentions` with ``seed``): features at the word's
    position, real / hallucinated, the detector's two scores and the caption's :func:`text_cue`."""
    feats: list[torch.Tensor] = []
    labels: list[str] = []
    scenes: list[int] = []
    scores: dict[str, list[float]] = {name: [] for name in MENTION_SCORES}
    for i in tqdm(range(n), desc=f"captions {split} seed {seed}", disable=not progress):
        scene = sample_scene(seed * 100_000 + 50_000 + i, split)
        request = ProbeRequest(render(scene), CAPTION_PROMPT, 40)
        result: Any = run_probe(session, "detector", request, lexicon=KINDS)
        chosen = [m for m, w in enumerate(result.words) if w in words]
        if not chosen:
            continue
        run = get_run(session, request)
        heads = capture_heads(session, session.extend_inputs(run.prepared.inputs, [t.id for t in run.generation.tokens]))
        feats.append(heads[0, [result.answer_positions[result.answer_indices[m]] for m in chosen]])
        labels += ["real" if scene.find(result.words[m]) else "hallucinated" for m in chosen]
        scenes += [i] * len(chosen)
        for name in MENTION_SCORES[:2]:
            scores[name] += [float(getattr(result, name)[m]) for m in chosen]
        scores[MENTION_SCORES[2]] += [text_cue(result.words, m) for m in chosen]
    return Examples(torch.cat(feats), labels, scenes, scores={k: np.array(v) for k, v in scores.items()})


def subset(examples: Examples, keep: list[int]) -> Examples:
    return Examples(examples.features[keep], [examples.labels[i] for i in keep], [examples.scenes[i] for i in keep],
                    [examples.answers[i] for i in keep] if examples.answers else [],
                    {k: v[keep] for k, v in examples.scores.items()})


def bootstrap(scenes: Sequence[int], stats: Callable[[np.ndarray], tuple[float, float]],
              n_boot: int = N_BOOT, seed: int = 0) -> list[list[float]]:
    """95% percentile intervals of two statistics of the items and of their difference, resampling
    scenes with replacement (all items of a drawn scene come along)."""
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(scenes):
        groups.setdefault(s, []).append(i)
    members = list(groups.values())
    rng = np.random.default_rng(seed)
    draws = np.array([stats(np.concatenate([members[j] for j in rng.integers(0, len(members), len(members))]))
                      for _ in range(n_boot)])
    draws = np.column_stack([draws, draws[:, 0] - draws[:, 1]])
    low, high = np.nanpercentile(draws, 2.5, axis=0), np.nanpercentile(draws, 97.5, axis=0)
    return [[float(lo), float(hi)] for lo, hi in zip(low, high)]


def accuracy(right: np.ndarray, truth: np.ndarray, balanced: bool) -> float:
    """Share right, or with ``balanced`` the mean over classes of the share right."""
    if not balanced:
        return float(right.mean())
    return float(np.mean([right[truth == c].mean() for c in np.unique(truth)]))


def accuracy_row(task: str, split: str, fit: SAVClassifier, test: Examples, against: str,
                 other: Sequence[str], balanced: bool = False) -> Row:
    """SAV's (balanced) accuracy against another's predictions on the same items."""
    truth = np.array(test.labels)
    sav_right = np.array(fit.predict(test.features)) == truth
    other_right = np.array(other) == truth
    ci = bootstrap(test.scenes, lambda idx: (accuracy(sav_right[idx], truth[idx], balanced),
                                             accuracy(other_right[idx], truth[idx], balanced)))
    a, b = accuracy(sav_right, truth, balanced), accuracy(other_right, truth, balanced)
    return Row(task, split, len(fit.heads), len(truth), "bal. acc." if balanced else "accuracy", a, ci[0],
               against, b, ci[1], a - b, ci[2], [list(h) for h in fit.heads])


def probe_predictions(train: Examples, test: Examples) -> list[str]:
    """A logistic-regression probe on every head's output together, fitted on the same few-shot
    examples: whether the answer is linearly there when SAV's cosine vote misses it."""
    from sklearn.linear_model import LogisticRegression
    probe = LogisticRegression(max_iter=5000).fit(train.features.flatten(1).numpy(), train.labels)
    return [str(p) for p in probe.predict(test.features.flatten(1).numpy())]


def auroc_row(split: str, fit: SAVClassifier, test: Examples, score: str) -> Row:
    """AUROC (real above hallucinated) of SAV's vote share for "real" and of another score."""
    real = np.array(test.labels) == "real"
    share = fit.votes(test.features)[:, fit.classes.index("real")] / len(fit.heads)
    other = test.scores[score]

    def both(idx: np.ndarray) -> tuple[float, float]:
        r = real[idx]
        return auroc(share[idx][r], share[idx][~r]), auroc(other[idx][r], other[idx][~r])
    a, b = both(np.arange(len(real)))
    ci = bootstrap(test.scenes, both)
    return Row("mention", split, len(fit.heads), len(real), "AUROC", a, ci[0], score, b, ci[1], a - b, ci[2],
               [list(h) for h in fit.heads])


def fits(train: Examples, model: str, task: str) -> list[SAVClassifier]:
    """One classifier per setting of :data:`K_SETTINGS` (a k above the model's heads is skipped)."""
    total = train.features.shape[1] * train.features.shape[2]
    return [fit_sav(train.features, train.labels, SAVConfig(k=k), model, task)
            for k in K_SETTINGS if k is None or k <= total]


def question_rows(session, task: str, splits: Sequence[str], n: int, model: str) -> list[Row]:
    """A question task fitted on few-shot neutral scenes, scored on each of ``splits`` against
    the model's answers, and (paper k) against a linear probe on the same few-shot examples."""
    pool = question_items(task, "neutral", POOL_SCENES[task], FEW_SHOT_START)
    train = question_examples(session, [pool[i] for i in few_shot([lab for _, _, lab in pool])], ask=False)
    classifiers = fits(train, model, task)
    rows = []
    for split in splits:
        test = question_examples(session, question_items(task, split, n, 0), ask=True)
        rows += [accuracy_row(task, split, fit, test, "model's answer", test.answers) for fit in classifiers]
        rows.append(accuracy_row(task, split, classifiers[0], test, "linear probe, all heads",
                                 probe_predictions(train, test)))
    return rows


def preference_rows(session, n: int, model: str) -> list[Row]:
    """Which side the answer will follow, from the prompt: balanced accuracy (the model follows
    the text far more often) against a constant guess and a linear probe."""
    pool = preference_examples(session, PREFERENCE_POOL, FEW_SHOT_START)
    train = subset(pool, few_shot(pool.labels))
    test = preference_examples(session, PREFERENCE_TEST_FACTOR * n, 0)
    classifiers = fits(train, model, "preference")
    rows = [accuracy_row("preference", "neutral", fit, test, "always 'text'", ["text"] * len(test.labels), True)
            for fit in classifiers]
    return rows + [accuracy_row("preference", "neutral", classifiers[0], test, "linear probe, all heads",
                                probe_predictions(train, test), True)]


def mention_rows(session, split: str, n: int, model: str, words: tuple[str, ...] = KINDS,
                 progress: bool = True) -> list[Row]:
    """Real vs hallucinated mentions of ``words``: few-shot from detector seed 1, held out seed 2."""
    pool = mention_examples(session, split, MENTION_POOL, MENTION_TRAIN_SEED, words, progress)
    train = subset(pool, few_shot(pool.labels))
    test = mention_examples(session, split, n, MENTION_TEST_SEED, words, progress)
    return [auroc_row(split if len(words) > 1 else f"{split}, {words[0]}", fit, test, score)
            for fit in fits(train, model, "mention") for score in MENTION_SCORES]


TASKS = ("exist", "colour", "size", "preference")


def fit_task(session, task: str, config: SAVConfig | None = None) -> SAVClassifier:
    """A classifier for one task, fitted on its few-shot examples (20 per class, from the scenes
    apart from the held-out ones), as the table's rows fit it."""
    if task not in TASKS:
        raise InputError(f"unknown SAV task {task!r}; choose one of {', '.join(TASKS)}")
    if task == "preference":
        pool = preference_examples(session, PREFERENCE_POOL, FEW_SHOT_START)
        train = subset(pool, few_shot(pool.labels))
    else:
        items = question_items(task, "neutral", POOL_SCENES[task], FEW_SHOT_START)
        train = question_examples(session, [items[i] for i in few_shot([lab for _, _, lab in items])], ask=False)
    return fit_sav(train.features, train.labels, config or SAVConfig(), model_fingerprint(session.model), task)


def evaluate(session, n: int = 200, progress: bool = True) -> list[Row]:
    """Every task's rows on ``n`` held-out scenes (items) per split."""
    model = model_fingerprint(session.model)
    rows = question_rows(session, "exist", ("neutral", "cooccur"), n, model)
    rows += question_rows(session, "colour", ("neutral", "colour_prior"), n, model)
    rows += question_rows(session, "size", ("neutral", "colour_prior"), n, model)
    rows += preference_rows(session, n, model)
    rows += mention_rows(session, "cooccur", n, model, progress=progress)
    return rows + mention_rows(session, "colour_prior", n, model, (COOCCUR_TARGET,), progress)


def variance_share(features: torch.Tensor, groups: Sequence[str]) -> np.ndarray:
    """[layers, heads]: the share of each head's output variance explained by ``groups`` (the
    between-group sum of squares over the total), to see what dominates a head's vector."""
    x = features.double()
    centre = x.mean(0)
    total = ((x - centre) ** 2).sum((0, 3))
    between = torch.zeros_like(total)
    names = np.array(groups)
    for g in np.unique(names):
        members = torch.from_numpy(names == g)
        between += members.sum() * ((x[members].mean(0) - centre) ** 2).sum(-1)
    return (between / total).numpy()


def exist_variance(session, n_scenes: int = 200) -> dict[str, np.ndarray]:
    """For "is there a <kind> ?" on ``n_scenes`` few-shot-pool neutral scenes: each head's
    variance share explained by the kind asked and by the answer (why the cosine vote misses)."""
    pool = question_items("exist", "neutral", n_scenes, FEW_SHOT_START)
    examples = question_examples(session, pool, ask=False)
    return {"kind asked": variance_share(examples.features, [p.split()[3] for _, p, _ in pool]),
            "yes / no": variance_share(examples.features, examples.labels)}


def format_table(rows: list[Row]) -> str:
    def cell(value: float, ci: list[float]) -> str:
        return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
    lines = [f"{'task':<11}{'split':<13}{'k':>3}{'n':>6} {'metric':<9}{'SAV':<24}{'against':<24}"
             f"{'theirs':<24}{'SAV - theirs'}"]
    for r in rows:
        lines.append(f"{r.task:<11}{r.split:<13}{r.k:>3}{r.n:>6} {r.metric:<9}{cell(r.sav, r.sav_ci):<24}"
                     f"{r.against:<24}{cell(r.other, r.other_ci):<24}{r.diff:+.3f} "
                     f"[{r.diff_ci[0]:+.3f}, {r.diff_ci[1]:+.3f}]")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Sparse Attention Vectors on the scene world (held-out scenes)")
    parser.add_argument("--n", type=int, default=200, help="held-out scenes per split (and per task)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    from studio.engine.session import ModelSession
    torch.manual_seed(0)
    session = ModelSession.load(None, device="cpu")
    rows = evaluate(session, args.n)
    print(format_table(rows))
    for name, share in exist_variance(session).items():
        print(f"exist, neutral pool of 400 items: share of each head's variance explained by {name} "
              f"(rows = layers, columns = heads)\n{np.array2string(share, precision=2)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in rows], f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
