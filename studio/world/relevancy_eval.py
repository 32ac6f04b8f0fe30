"""Do relevancy maps point at the object a caption names? Grounding of relevancy vs rollout.

For each held-out scene of a split, the embedded model captions the image (greedy, as every
probe's cached run); every generated object word whose kind is in the scene is a *real
mention*. A map grounds a mention when its highest-scoring image patch has its centre inside
the object's true pixel box (:func:`studio.world.render.object_box`), the same criterion as
the detector's grounding accuracy (:mod:`studio.world.detect_eval`). Two maps of the same
token are compared: the relevancy map (:mod:`probes.relevancy`, the row of the position that
predicts the word) and attention rollout (:mod:`probes.attention`, residual 0.5, same row).
``chance`` is the share of the grid's patch centres that lie inside the box, averaged over
mentions: what a uniformly random patch would score.

Scenes are resampled with replacement (paired bootstrap, 95% percentile intervals), so the
interval of the difference compares the two maps on the same mentions.

    python -m studio.world.relevancy_eval --n 50 --split cooccur
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from probes import ProbeRequest, run_probe
from studio.adapters import PatchGrid
from studio.benchmarks.intervals import paired_bootstrap
from studio.world.language import CAPTION_PROMPT
from studio.world.render import object_box, render
from studio.world.scenes import KINDS, Scene, sample_scene

MAPS = ("relevancy", "rollout")
N_BOOT = 1000


@dataclass
class GroundingReport:
    """Shares of real mentions grounded by each map, with 95% intervals, and their difference."""

    split: str
    n_scenes: int
    n_mentions: int
    share: dict
    ci: dict
    relevancy_minus_rollout: float
    diff_ci: list
    chance: float


def _centre_inside(result: Any, position: int, box: tuple[int, int, int, int]) -> bool:
    grid, row, col = result.patch[position]
    x0, y0, x1, y1 = PatchGrid.from_dict(result.grids[grid]).patch_box(row, col)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return bool(box[0] <= cx < box[2] and box[1] <= cy < box[3])


def _chance(result: Any, box: tuple[int, int, int, int]) -> float:
    return float(np.mean([_centre_inside(result, p, box) for p in result.image_positions]))


def scene_records(session, scene: Scene, max_new_tokens: int = 40) -> list[dict]:
    """One record per real object word in the model's caption of ``scene``: whether each map's
    best patch lies in the object's box, and the chance rate for that box."""
    request = ProbeRequest(render(scene), CAPTION_PROMPT, max_new_tokens)
    relevancy: Any = run_probe(session, "relevancy", request, max_tokens=max_new_tokens)
    attention: Any = run_probe(session, "attention", request)
    images = relevancy.image_positions
    records = []
    for row, k in enumerate(relevancy.answer_indices):
        word = relevancy.tokens[relevancy.answer_positions[k]].strip().lower()
        obj = scene.find(word) if word in KINDS else None
        if obj is None:
            continue
        box = object_box(obj)
        best = {"relevancy": images[int(np.argmax(relevancy.relevancy[row, images]))],
                "rollout": attention.image_positions[int(np.argmax(attention.rollout[k]))]}
        records.append({"scene": scene.seed, "answer_index": k, "word": word, "chance": _chance(relevancy, box),
                        **{name: _centre_inside(relevancy, best[name], box) for name in MAPS}})
    return records


def _share(totals: dict[str, float]) -> dict[str, float]:
    return {"share": totals["grounded"] / totals["mentions"] if totals["mentions"] else float("nan")}


def summarise(split: str, per_scene: list[list[dict]], n_boot: int = N_BOOT, seed: int = 0) -> GroundingReport:
    """Shares grounded by each map over all real mentions, scene-resampled 95% intervals."""
    counts = {name: [{"grounded": float(sum(r[name] for r in rs)), "mentions": float(len(rs))} for rs in per_scene]
              for name in MAPS}
    paired = paired_bootstrap(counts["relevancy"], counts["rollout"], _share, n_boot=n_boot, seed=seed)
    alone = paired_bootstrap(counts["rollout"], counts["relevancy"], _share, n_boot=n_boot, seed=seed)
    mentions = [r for rs in per_scene for r in rs]
    return GroundingReport(
        split=split, n_scenes=len(per_scene), n_mentions=len(mentions),
        share={"relevancy": paired.metrics["share"], "rollout": alone.metrics["share"]},
        ci={"relevancy": paired.ci["share"], "rollout": alone.ci["share"]},
        relevancy_minus_rollout=paired.diff_to_greedy["share"], diff_ci=paired.diff_ci["share"],
        chance=float(np.mean([r["chance"] for r in mentions])) if mentions else float("nan"))


def run_study(session, n: int, split: str = "cooccur", seed: int = 0, n_boot: int = N_BOOT,
              progress: bool = True) -> tuple[GroundingReport, list[dict]]:
    """The report for ``n`` held-out scenes of ``split`` (seeds as in the detector's evaluation)
    and every mention's record."""
    per_scene = [scene_records(session, sample_scene(seed * 100_000 + 50_000 + i, split))
                 for i in tqdm(range(n), desc=f"relevancy {split}", disable=not progress)]
    return summarise(split, per_scene, n_boot, seed), [r for rs in per_scene for r in rs]


def format_report(report: GroundingReport) -> str:
    lines = [f"split {report.split}: {report.n_scenes} captions, {report.n_mentions} real object mentions; "
             "share whose best patch lies in the object's box (95% scene-bootstrap interval)"]
    for name in MAPS:
        lo, hi = report.ci[name]
        lines.append(f"  {name:<10} {report.share[name]:.3f} [{lo:.3f}, {hi:.3f}]")
    lo, hi = report.diff_ci
    lines.append(f"  relevancy - rollout {report.relevancy_minus_rollout:+.3f} [{lo:+.3f}, {hi:+.3f}] (paired)")
    lines.append(f"  chance (random patch) {report.chance:.3f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studio.world.relevancy_eval", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=50, help="scenes")
    parser.add_argument("--split", default="cooccur")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-boot", type=int, default=N_BOOT)
    parser.add_argument("--json", default=None, help="write the report and per-mention records here")
    args = parser.parse_args(argv)
    from studio.engine.session import ModelSession
    session = ModelSession.load(None, device="cpu")
    report, records = run_study(session, args.n, args.split, args.seed, args.n_boot)
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"report": asdict(report), "records": records, "settings": vars(args)}, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
