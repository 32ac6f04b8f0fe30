"""Paired-bootstrap 95% intervals of a method's metrics and of their differences to greedy.

Every metric the studio reports (POPE's, CHAIR's, the world's question accuracies) is a ratio
of sums of per-item counts. A bootstrap resamples items (scenes, questions, captions) with
replacement, ``n_boot`` times, and recomputes each metric for the method and for greedy on the
same resample: the interval of the difference is paired, so it reflects how the two methods
differ on the same items rather than how the items vary.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

Metrics = Callable[[dict[str, float]], Mapping[str, float]]


@dataclass
class Interval:
    """A method's metrics, their 95% intervals, and the paired differences to greedy with theirs."""

    metrics: dict[str, float]
    ci: dict[str, list[float]]
    diff_to_greedy: dict[str, float]
    diff_ci: dict[str, list[float]]


def _totals(rows: np.ndarray, keys: list[str], index) -> dict[str, float]:
    return dict(zip(keys, rows[index].sum(0)))


def paired_bootstrap(method: Sequence[Mapping[str, float]], greedy: Sequence[Mapping[str, float]], metrics: Metrics,
                     n_boot: int = 1000, seed: int = 0) -> Interval:
    """The metrics of ``method``'s per-item counts (``metrics`` maps summed counts to metric values)
    with 95% percentile intervals, and the paired differences to ``greedy``'s counts on the same
    items. Items are resampled with one seeded generator, so a run repeats exactly."""
    if len(method) != len(greedy) or not method:
        raise ValueError(f"paired bootstrap needs the same items for both methods ({len(method)} vs {len(greedy)})")
    keys = sorted(method[0])
    a = np.array([[c[k] for k in keys] for c in method], dtype=float)
    b = np.array([[c[k] for k in keys] for c in greedy], dtype=float)
    full_a, full_b = metrics(_totals(a, keys, slice(None))), metrics(_totals(b, keys, slice(None)))
    names = list(full_a)
    rng = np.random.default_rng(seed)
    samples = np.empty((n_boot, len(names)))
    differences = np.empty((n_boot, len(names)))
    for i in range(n_boot):
        idx = rng.integers(0, len(a), len(a))
        ma, mb = metrics(_totals(a, keys, idx)), metrics(_totals(b, keys, idx))
        samples[i] = [ma[m] for m in names]
        differences[i] = [ma[m] - mb[m] for m in names]

    def bounds(values: np.ndarray) -> dict[str, list[float]]:
        low, high = np.percentile(values, 2.5, axis=0), np.percentile(values, 97.5, axis=0)
        return {m: [float(lo), float(hi)] for m, lo, hi in zip(names, low, high)}
    return Interval(metrics={m: float(full_a[m]) for m in names}, ci=bounds(samples),
                    diff_to_greedy={m: float(full_a[m] - full_b[m]) for m in names}, diff_ci=bounds(differences))
