"""Score a model on the scene world against ground truth: POPE, CHAIR and question accuracy.

- **POPE** (Li et al. 2023): yes/no existence questions, half about present objects, half
  about absent ones chosen three ways — *random* (any absent kind), *popular* (the absent
  kinds most frequent in training), *adversarial* (the absent kinds that co-occur most with
  the present ones). Accuracy, F1 (positive = "yes") and yes-ratio.
- **CHAIR** (Rohrbach et al. 2018) on captions: CHAIR_i = hallucinated object mentions / all
  object mentions; CHAIR_s = captions with at least one hallucination / all captions; and
  object recall = real objects mentioned / real objects.
"""
from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from tqdm.auto import tqdm

from studio.world.language import (
    CAPTION_PROMPT,
    NUMBERS,
    exist_question,
    mentioned_kinds,
    where_answer,
)
from studio.world.render import render
from studio.world.scenes import (
    KINDS,
    Scene,
    sample_scene,
    sample_split,
)

POPE_KINDS = ("random", "popular", "adversarial")
EVAL_SPLITS = ("neutral", "cooccur", "colour_prior")


@dataclass
class PopeScore:
    accuracy: float
    f1: float
    yes_ratio: float
    n: int


@dataclass
class ChairScore:
    chair_s: float
    chair_i: float
    recall: float
    n_captions: int
    n_mentions: int


@dataclass
class SplitReport:
    """Scores of one split: POPE per negative kind, CHAIR on captions, question accuracies."""

    split: str
    pope: dict[str, PopeScore] = field(default_factory=dict)
    chair: ChairScore | None = None
    questions: dict[str, float] = field(default_factory=dict)


def training_frequency(n: int = 4000) -> Counter:
    """How often each kind appears in (a sample of) the training distribution."""
    return Counter(k for s in sample_split("train", n) for k in s.kinds)


def cooccurrence(n: int = 4000) -> dict[str, Counter]:
    """For each kind, how often every other kind appears with it in training."""
    table: dict[str, Counter] = {k: Counter() for k in KINDS}
    for s in sample_split("train", n):
        for a in s.kinds:
            table[a].update(s.kinds - {a})
    return table


def pope_questions(scene: Scene, kind: str, rng: random.Random, freq: Counter,
                   cooc: dict[str, Counter]) -> list[tuple[str, str]]:
    """(question, truth) pairs: every present kind (yes) and as many absent ones (no)."""
    present = sorted(scene.kinds)
    absent = [k for k in KINDS if k not in scene.kinds]
    n = min(len(present), len(absent))
    if kind == "random":
        negatives = rng.sample(absent, n)
    elif kind == "popular":
        negatives = sorted(absent, key=lambda k: (-freq[k], k))[:n]
    elif kind == "adversarial":
        score = {k: sum(cooc[p][k] for p in present) for k in absent}
        negatives = sorted(absent, key=lambda k: (-score[k], k))[:n]
    else:
        raise ValueError(f"unknown POPE kind {kind!r}; choose one of {', '.join(POPE_KINDS)}")
    return [(exist_question(k), "yes") for k in present[:n]] + [(exist_question(k), "no") for k in negatives]


def pope_counts(pairs: list[tuple[str, str]]) -> dict[str, int]:
    """Counts of (prediction, truth) yes/no pairs; anything not starting with "yes" counts as no."""
    judged = [(p.strip().lower().startswith("yes"), t == "yes") for p, t in pairs]
    return {"n": len(judged), "correct": sum(p == t for p, t in judged), "yes": sum(p for p, _ in judged),
            "tp": sum(p and t for p, t in judged), "fp": sum(p and not t for p, t in judged),
            "fn": sum(t and not p for p, t in judged)}


def pope_from_counts(c: dict) -> PopeScore:
    """Accuracy, F1 (positive = "yes") and yes-ratio from :func:`pope_counts` (or sums of them)."""
    precision, recall = c["tp"] / max(1, c["tp"] + c["fp"]), c["tp"] / max(1, c["tp"] + c["fn"])
    f1 = 2 * precision * recall / max(1e-12, precision + recall)
    return PopeScore(accuracy=c["correct"] / max(1, c["n"]), f1=f1, yes_ratio=c["yes"] / max(1, c["n"]),
                     n=int(c["n"]))


def pope_score(pairs: list[tuple[str, str]]) -> PopeScore:
    """Score (prediction, truth) yes/no pairs."""
    return pope_from_counts(pope_counts(pairs))


def chair_counts(scene: Scene, text: str) -> tuple[int, int, int]:
    """(hallucinated mentions, all mentions, real objects recalled) for one caption."""
    mentioned = mentioned_kinds(text)
    hallucinated = sum(1 for k in mentioned if k not in scene.kinds)
    recalled = len(scene.kinds & set(mentioned))
    return hallucinated, len(mentioned), recalled


def chair_score(items: list[tuple[Scene, str]]) -> ChairScore:
    hall = mentions = recalled = objects = bad_captions = 0
    for scene, text in items:
        h, m, r = chair_counts(scene, text)
        hall, mentions, recalled, objects = hall + h, mentions + m, recalled + r, objects + len(scene.kinds)
        bad_captions += h > 0
    return ChairScore(chair_s=bad_captions / max(1, len(items)), chair_i=hall / max(1, mentions),
                      recall=recalled / max(1, objects), n_captions=len(items), n_mentions=mentions)


def question_items(scene: Scene, rng: random.Random) -> list[tuple[str, str, str]]:
    """(task, question, answer) for colour, size, count and position questions about a scene."""
    obj = rng.choice(scene.objects)
    return [("colour", f"what color is the {obj.kind} ?", obj.colour),
            ("size", f"what size is the {obj.kind} ?", obj.size),
            ("count", "how many objects are there ?", NUMBERS[len(scene.objects)]),
            ("where", f"where is the {obj.kind} ?", where_answer(obj))]


Answer = Callable[[list, list[str], int], list[str]]


def evaluate_split(answer: Answer, split: str, n_scenes: int, seed: int = 0,
                   progress: bool = True, freq: Counter | None = None,
                   cooc: dict[str, Counter] | None = None, batch: int = 32) -> tuple[SplitReport, list[dict]]:
    """Score ``answer(images, prompts, max_new_tokens) -> texts`` on ``n_scenes`` of ``split``.

    Returns the report and one record per scene (caption and answers) for inspection.
    """
    freq = freq or training_frequency()
    cooc = cooc or cooccurrence()
    rng = random.Random(seed)
    scenes = [sample_scene(seed * 100_000 + i, split) for i in range(n_scenes)]
    images = [render(s) for s in scenes]
    records: list[dict[str, Any]] = [{"scene": s.to_dict(), "pope": {}, "questions": []} for s in scenes]
    bar = tqdm(total=n_scenes * 2, desc=f"eval {split}", disable=not progress)
    for start in range(0, n_scenes, batch):
        chunk = slice(start, start + batch)
        for record, text in zip(records[chunk], answer(images[chunk], [CAPTION_PROMPT] * len(images[chunk]), 40)):
            record["caption"] = text
        bar.update(len(images[chunk]))
    for scene, image, record in zip(scenes, images, records):
        items = [(f"pope:{kind}", q, t) for kind in POPE_KINDS
                 for q, t in pope_questions(scene, kind, rng, freq, cooc)] + question_items(scene, rng)
        preds = answer([image] * len(items), [q for _, q, _ in items], 6)
        for (task, question, truth), pred in zip(items, preds):
            if task.startswith("pope:"):
                record["pope"].setdefault(task[5:], []).append([question, truth, pred])
            else:
                record["questions"].append([task, question, truth, pred])
        bar.update(1)
    bar.close()
    return summarise(split, scenes, records), records


def summarise(split: str, scenes: list[Scene], records: list[dict]) -> SplitReport:
    """A split's report from per-scene records (as :func:`evaluate_split` writes them)."""
    report = SplitReport(split=split)
    report.pope = {k: pope_score([(p, t) for r in records for _, t, p in r["pope"].get(k, [])])
                   for k in POPE_KINDS}
    report.chair = chair_score([(s, r["caption"]) for s, r in zip(scenes, records)])
    right: Counter = Counter()
    total: Counter = Counter()
    for r in records:
        for task, _, truth, pred in r["questions"]:
            total[task] += 1
            right[task] += pred.strip() == truth
    report.questions = {t: right[t] / total[t] for t in sorted(total)}
    return report


def report_dict(reports: list[SplitReport]) -> dict:
    return {r.split: asdict(r) for r in reports}


def format_table(reports: list[SplitReport]) -> str:
    """A plain-text table of the reports, one block per split."""
    lines = []
    for r in reports:
        lines.append(f"== split: {r.split}")
        lines.append(f"  {'POPE':<12}{'accuracy':>10}{'F1':>8}{'yes-ratio':>11}{'n':>6}")
        for kind, s in r.pope.items():
            lines.append(f"  {kind:<12}{s.accuracy:>10.3f}{s.f1:>8.3f}{s.yes_ratio:>11.3f}{s.n:>6}")
        if r.chair:
            c = r.chair
            lines.append(f"  captions    CHAIR_s {c.chair_s:.3f}  CHAIR_i {c.chair_i:.3f}  "
                         f"recall {c.recall:.3f}  (n={c.n_captions}, mentions={c.n_mentions})")
        if r.questions:
            lines.append("  questions   " + "  ".join(f"{t} {a:.3f}" for t, a in r.questions.items()))
    return "\n".join(lines)
