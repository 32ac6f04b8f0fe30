"""Compare decoding methods on ground truth with paired bootstrap confidence intervals.

Every method answers the same scenes and the same questions (POPE questions are drawn from
the split's seed, not from the answers). Metrics are ratios of per-scene counts, so a
bootstrap resamples scenes (1000 times by default) and recomputes each metric for the method
and for greedy on the same resample: the 95% interval of the difference is paired.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from studio.benchmarks.intervals import paired_bootstrap
from studio.world.evaluate import (
    POPE_KINDS,
    Answer,
    chair_counts,
    evaluate_split,
    pope_counts,
    pope_from_counts,
)
from studio.world.scenes import Scene

QUESTION_TASKS = ("colour", "size", "count", "where")
METRICS = tuple(f"pope_{k}_{m}" for k in POPE_KINDS for m in ("accuracy", "f1", "yes_ratio")) + (
    "chair_s", "chair_i", "recall") + tuple(f"{t}_accuracy" for t in QUESTION_TASKS)


def scene_counts(record: dict) -> dict[str, float]:
    """Per-scene counts from which every metric is a ratio of sums."""
    scene = Scene.from_dict(record["scene"])
    hallucinated, mentions, recalled = chair_counts(scene, record["caption"])
    counts = {"halluc": hallucinated, "mentions": mentions, "recalled": recalled, "objects": len(scene.kinds),
              "bad_caption": float(hallucinated > 0), "captions": 1.0}
    for kind in POPE_KINDS:
        pope = pope_counts([(p, t) for _, t, p in record["pope"].get(kind, [])])
        counts.update({f"{kind}_{k}": v for k, v in pope.items()})
    for task in QUESTION_TASKS:
        answers = [pred.strip() == truth for t, _, truth, pred in record["questions"] if t == task]
        counts.update({f"{task}_right": float(sum(answers)), f"{task}_asked": float(len(answers))})
    return counts


def metrics_from(total: dict[str, float]) -> dict[str, float]:
    out = {"chair_s": total["bad_caption"] / max(1, total["captions"]),
           "chair_i": total["halluc"] / max(1, total["mentions"]),
           "recall": total["recalled"] / max(1, total["objects"])}
    for kind in POPE_KINDS:
        score = pope_from_counts({k: total[f"{kind}_{k}"] for k in ("n", "correct", "yes", "tp", "fp", "fn")})
        out.update({f"pope_{kind}_accuracy": score.accuracy, f"pope_{kind}_f1": score.f1,
                    f"pope_{kind}_yes_ratio": score.yes_ratio})
    out.update({f"{t}_accuracy": total[f"{t}_right"] / max(1, total[f"{t}_asked"]) for t in QUESTION_TASKS})
    return out


@dataclass
class MethodScore:
    method: str
    split: str
    metrics: dict
    ci: dict
    diff_to_greedy: dict
    diff_ci: dict


def bootstrap(method: list[dict], greedy: list[dict], n_boot: int = 1000, seed: int = 0) -> tuple[dict, dict, dict]:
    """(metric CI, difference to greedy, difference CI) over scene resamples, 95%."""
    interval = paired_bootstrap(method, greedy, metrics_from, n_boot=n_boot, seed=seed)
    return interval.ci, interval.diff_to_greedy, interval.diff_ci


def strategy_answerer(session, strategy) -> Answer:
    """An :data:`Answer` function decoding with ``strategy`` (checked against the model first)."""
    strategy.check(session)

    def answer(images, prompts, max_new_tokens):
        return session.answer_batch(images, prompts, max_new_tokens, strategy)
    return answer


def compare_methods(answerers: dict[str, Answer], splits: list[str], n_scenes: int, seed: int = 0,
                    progress: bool = True) -> list[MethodScore]:
    """Score every method (name -> answer function; must include "greedy") on every split."""
    scores = []
    for split in splits:
        counts = {}
        for name, answer in answerers.items():
            _, records = evaluate_split(answer, split, n_scenes, seed=seed, progress=progress)
            counts[name] = [scene_counts(r) for r in records]
        for name in answerers:
            ci, diff, diff_ci = bootstrap(counts[name], counts["greedy"], seed=seed)
            total = {k: sum(c[k] for c in counts[name]) for k in counts[name][0]}
            scores.append(MethodScore(name, split, metrics_from(total), ci, diff, diff_ci))
    return scores


def format_comparison(scores: list[MethodScore]) -> str:
    shown = ("pope_random_accuracy", "pope_popular_accuracy", "pope_adversarial_accuracy",
             "pope_adversarial_f1", "pope_adversarial_yes_ratio", "chair_s", "chair_i", "recall",
             "colour_accuracy")
    lines = ["(each cell: value, then for methods other than greedy the difference to greedy and its"
             " 95% paired-bootstrap interval)"]
    for split in dict.fromkeys(s.split for s in scores):
        lines.append(f"== split: {split}")
        lines.append(f"  {'method':<10}" + "".join(f"{m.replace('pope_', 'P.').replace('_accuracy', ' acc'):>30}"
                                                    for m in shown))
        for s in (x for x in scores if x.split == split):
            cells = []
            for m in shown:
                lo, hi = s.diff_ci[m]
                delta = "" if s.method == "greedy" else f" {s.diff_to_greedy[m]:+.3f} [{lo:+.3f},{hi:+.3f}]"
                cells.append(f"{s.metrics[m]:.3f}{delta}")
            lines.append(f"  {s.method:<10}" + "".join(f"{c:>30}" for c in cells))
    return "\n".join(lines)


def comparison_dict(scores: list[MethodScore]) -> dict:
    out: dict = {}
    for s in scores:
        out.setdefault(s.split, {})[s.method] = asdict(s)
    return out
