"""The alpha is chosen on one split of held-out conflict items and reported on another, on
scenes neither shares.

Why: an alpha chosen as the smallest that reaches a target on some items reads high on those
same items (the choice rides their noise), so figures reported there are optimistic. The
validation split is the held-out set the sweep has always used (scene seeds from 0); the
report split draws items of the same kind from scenes far from it and from the fitting
scenes. Every scene is of the neutral split, which training never sees.

The report compares the chosen alpha with alpha 0 on the same items, each figure with a 95%
paired-bootstrap interval over scenes (:func:`studio.benchmarks.intervals.paired_bootstrap`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from studio.benchmarks.intervals import paired_bootstrap
from studio.engine.errors import InputError
from studio.steering.fit import DirectionFit
from studio.steering.preference import DIRECTION_ITEMS_START, answer_items, image_answerable
from studio.steering.sweep import Sweep, chosen_alpha, sweep
from studio.world.conflict import STYLES, ConflictItem, sample_items

VALIDATION_START = 0
REPORT_START = 2 * DIRECTION_ITEMS_START
MAX_SPLIT = DIRECTION_ITEMS_START


@dataclass(frozen=True)
class SceneSplit:
    """Conflict items on scene seeds ``start .. start + n - 1``: one per scene and style, and a
    matched (true-claim) item per scene."""

    name: str
    start: int
    n: int

    def __post_init__(self) -> None:
        if not 0 < self.n <= MAX_SPLIT:
            raise InputError(f"a split holds 1..{MAX_SPLIT} scenes; got {self.n}")

    @property
    def seeds(self) -> range:
        return range(self.start, self.start + self.n)

    def conflict(self, styles: tuple[str, ...] = STYLES) -> list[ConflictItem]:
        return [item for style in styles for item in sample_items(self.n, style, start=self.start)]

    def matched(self) -> list[ConflictItem]:
        return sample_items(self.n, "neutral", conflict=False, start=self.start)

    def to_dict(self) -> dict:
        return {"name": self.name, "scene_seeds": [self.start, self.start + self.n], "items_per_style": self.n}


def validation_split(n: int) -> SceneSplit:
    """The held-out items the sweep chooses alpha on (:func:`~studio.steering.preference.held_out_items`)."""
    return SceneSplit("validation", VALIDATION_START, n)


def report_split(n: int) -> SceneSplit:
    """Items from scene seeds :data:`REPORT_START` on: apart from the validation split and from the
    fitting scenes (from :data:`~studio.steering.preference.DIRECTION_ITEMS_START`) while each
    holds at most :data:`MAX_SPLIT` scenes."""
    return SceneSplit("report", REPORT_START, n)


FIGURES = ("image_answerable", "image_all", "matched_accuracy")


def _figures(totals: dict[str, float]) -> dict[str, float]:
    """Uninstructed conflicts following the image (answerable ones, all) and matched accuracy."""
    return {"image_answerable": totals["answerable_image"] / max(1.0, totals["answerable"]),
            "image_all": totals["conflict_image"] / max(1.0, totals["conflict"]),
            "matched_accuracy": totals["matched_right"] / max(1.0, totals["matched"])}


def _scene_counts(conflict: list[ConflictItem], matched: list[ConflictItem], answerable: list[bool],
                  answers: list[str]) -> list[dict[str, float]]:
    """Per scene: its uninstructed conflict (followed the image? answerable?) and its matched item
    (right?); ``answers`` holds the conflicts' answers, then the matched items'."""
    rows = []
    conflict_answers, matched_answers = answers[:len(conflict)], answers[len(conflict):]
    for item, twin, seen, answer, twin_answer in zip(conflict, matched, answerable, conflict_answers, matched_answers):
        image = float(item.follows(answer) == "image")
        rows.append({"conflict": 1.0, "conflict_image": image, "answerable": float(seen),
                     "answerable_image": image * seen, "matched": 1.0,
                     "matched_right": float(twin.follows(twin_answer) == "image")})
    return rows


@dataclass
class Report:
    """The figures (:data:`FIGURES`) at ``alpha`` on ``split`` with 95% intervals, alpha 0's on the
    same items, and the paired differences to alpha 0 with their intervals."""

    alpha: float
    split: dict
    figures: dict[str, float]
    ci: dict[str, list[float]]
    unsteered: dict[str, float]
    difference: dict[str, float]
    difference_ci: dict[str, list[float]]
    n_answerable: int

    def to_dict(self) -> dict:
        return asdict(self)


def report(session, fit: DirectionFit, layers: list[int], alpha: float, split: SceneSplit,
           n_boot: int = 1000, seed: int = 0) -> Report:
    """``fit`` at ``alpha`` against alpha 0 on ``split``'s uninstructed conflicts and matched items."""
    conflict, matched = split.conflict(("neutral",)), split.matched()
    answerable = image_answerable(session, conflict)
    steered = answer_items(session, conflict + matched, fit.steering(layers, alpha))
    plain = answer_items(session, conflict + matched)
    steered_counts = _scene_counts(conflict, matched, answerable, steered)
    plain_counts = _scene_counts(conflict, matched, answerable, plain)
    interval = paired_bootstrap(steered_counts, plain_counts, _figures, n_boot=n_boot, seed=seed)
    totals = {key: sum(row[key] for row in plain_counts) for key in plain_counts[0]}
    return Report(float(alpha), split.to_dict(), interval.metrics, interval.ci, _figures(totals),
                  interval.diff_to_greedy, interval.diff_ci, int(sum(answerable)))


@dataclass
class Validated:
    """The sweep on the validation split, the alpha chosen from it alone, and the report at that
    alpha on the report split (None when no alpha qualified)."""

    validation: Sweep
    alpha: float | None
    report: Report | None

    def to_dict(self) -> dict:
        return {"alpha": self.alpha, "report": None if self.report is None else self.report.to_dict()}


def validate_and_report(session, fit: DirectionFit, layers: list[int], alphas: list[float],
                        validation: SceneSplit, held: SceneSplit, progress: bool = True) -> Validated:
    """Sweep ``alphas`` on ``validation``, choose the alpha there (:func:`chosen_alpha`), and report
    it on ``held``; the report split's answers never inform the choice."""
    if set(validation.seeds) & set(held.seeds):
        raise InputError(f"the validation and report splits share scenes ({validation.to_dict()}, {held.to_dict()})")
    result = sweep(session, fit, layers, alphas, validation.conflict(), validation.matched(), progress)
    alpha = chosen_alpha(result)
    return Validated(result, alpha, None if alpha is None else report(session, fit, layers, alpha, held))


def format_report(result: Report) -> str:
    """One line per figure: value [95% CI] at alpha, against alpha 0 (difference [95% CI])."""
    names = {"image_answerable": f"follow the image, answerable ({result.n_answerable})",
             "image_all": "follow the image, all", "matched_accuracy": "matched accuracy"}
    seeds = result.split["scene_seeds"]
    lines = [f"{result.split['name']} split (scenes {seeds[0]}..{seeds[1] - 1}) at alpha {result.alpha:+g}:"]
    for key in FIGURES:
        low, high = result.ci[key]
        d_low, d_high = result.difference_ci[key]
        lines.append(f"  {names[key]}: {result.figures[key]:.1%} [{low:.1%}, {high:.1%}]; alpha 0 "
                     f"{result.unsteered[key]:.1%}; difference {result.difference[key]:+.1%} [{d_low:+.1%}, {d_high:+.1%}]")
    return "\n".join(lines)
