"""Does implicit multimodal alignment predict hallucination? Measured on the world's ground truth.

Shukor & Cord (NeurIPS 2024, arXiv 2405.16700) report a negative relation between the implicit
multimodal alignment score and hallucination: models whose image and text representations are
less aligned hallucinate more. Here, for ``n`` scenes of each split, the model captions the scene
(``CAPTION_PROMPT``, greedy, 40 tokens); the caption's hallucinated objects are counted against
ground truth (:func:`studio.world.evaluate.chair_counts`), and the ``alignment`` probe reads the
per-layer score from the same pass. The relation is Spearman's rank correlation across scenes,
per layer and for the score averaged over layers (the dashed mean line of the reference code's
plots), with a 95% percentile bootstrap interval over scenes (scenes resampled with replacement).

Departures, named:

- **Across scenes, one model.** The paper relates the score to hallucination across models
  (the reference code scores LLaVA-1.5 variants and their training checkpoints, each over a
  dataset); this study asks the per-example version of the claim, across scenes for one model.
- **Spearman, our choice.** The reference code computes no correlation coefficient, and the
  paper's text was not available to us to name one; hallucinations per caption are small counts
  with many ties (0 or 1 mostly), so a rank correlation (ties averaged) is used, not Pearson's.
- **Neutral scenes hallucinate nothing** on the embedded model (CHAIR_i 0.000 in the model card),
  so their correlation is undefined (NaN) alone; the pooled row (all splits together) mixes the
  within-split relation with the difference between splits, and is reported as such.
- ``mentions`` (object words per caption) is correlated with the score too, as a diagnostic:
  the text pool includes the answer, so a score that tracks caption length confounds the claim;
  the layer-mean correlation is also given with the scene's true object count, and with the
  caption's object words, partialled out (partial Spearman), controls the paper does not need
  across models. ``--text prompt`` leaves the answer out of the text pool altogether.

Run: ``python -m studio.world.alignment_eval --n 300``.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import rankdata
from tqdm.auto import tqdm

from probes import ProbeRequest, run_probe
from studio.world.evaluate import chair_counts
from studio.world.language import CAPTION_PROMPT
from studio.world.render import render
from studio.world.scenes import sample_scene

SPLITS = ("cooccur", "neutral")
N_BOOT = 2000


@dataclass
class Correlation:
    """Spearman's rho over ``n`` scenes with its 95% bootstrap interval; ``undefined``: resamples
    in which one side was constant (left out of the interval)."""

    rho: float
    low: float
    high: float
    n: int
    undefined: int


@dataclass
class AlignmentReport:
    """One split (or "pooled"): the scenes' hallucination, the mean score per layer, and the
    correlation of the score with hallucinated objects per caption (per layer and for the
    layer mean) and, as a diagnostic, with object words per caption."""

    split: str
    n_scenes: int
    hallucinated_per_caption: float
    captions_with_hallucination: float
    mean_score: list[float]
    per_layer: list[Correlation]
    layer_mean: Correlation
    layer_mean_given_objects: Correlation
    layer_mean_given_mentions: Correlation
    mentions_vs_layer_mean: Correlation


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (ties get average ranks); NaN when either side is constant."""
    rx, ry = rankdata(x), rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / denominator) if denominator > 0 else float("nan")


def partial_spearman(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> float:
    """Spearman's rho of ``x`` and ``y`` with ``z`` partialled out (the partial correlation of the
    ranks); NaN when undefined."""
    xy, xz, yz = spearman(x, y), spearman(x, z), spearman(y, z)
    denominator = np.sqrt((1 - xz * xz) * (1 - yz * yz))
    return float((xy - xz * yz) / denominator) if denominator > 0 else float("nan")


def bootstrap_correlation(x: ArrayLike, y: ArrayLike, n_boot: int = N_BOOT, seed: int = 0,
                          control: ArrayLike | None = None) -> Correlation:
    """Spearman's rho of paired samples (partial on ``control`` when given) with a 95% percentile
    interval over ``n_boot`` resamples of the pairs (one seeded generator, so a run repeats exactly)."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    c = None if control is None else np.asarray(control, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 3 or (c is not None and c.shape != a.shape):
        raise ValueError(f"need equal-length series of at least 3 values; got {a.shape} and {b.shape}")

    def rho(idx: np.ndarray) -> float:
        return spearman(a[idx], b[idx]) if c is None else partial_spearman(a[idx], b[idx], c[idx])
    rng = np.random.default_rng(seed)
    draws = np.array([rho(idx) for idx in rng.integers(0, len(a), (n_boot, len(a)))])
    defined = draws[~np.isnan(draws)]
    low, high = (np.percentile(defined, [2.5, 97.5]) if len(defined) else (np.nan, np.nan))
    return Correlation(rho=rho(np.arange(len(a))), low=float(low), high=float(high), n=len(a),
                       undefined=int(len(draws) - len(defined)))


def scene_record(session, split: str, index: int, seed: int = 0, params: dict | None = None) -> dict[str, Any]:
    """Caption scene ``index`` of ``split`` (the world eval's scenes for the same seed): its caption,
    hallucinated and all object mentions, and the per-layer alignment score of that pass."""
    scene = sample_scene(seed * 100_000 + index, split)
    result: Any = run_probe(session, "alignment", ProbeRequest(render(scene), CAPTION_PROMPT, 40), **(params or {}))
    hallucinated, mentions, _ = chair_counts(scene, result.answer)
    return {"split": split, "index": index, "caption": result.answer, "hallucinated": hallucinated,
            "mentions": mentions, "objects": len(scene.objects), "score": [float(v) for v in result.score]}


def correlate(split: str, records: list[dict], n_boot: int = N_BOOT, seed: int = 0) -> AlignmentReport:
    """The report of ``records`` (from :func:`scene_record`) under the name ``split``."""
    scores = np.array([r["score"] for r in records])
    halluc = np.array([r["hallucinated"] for r in records], dtype=float)
    mentions = np.array([r["mentions"] for r in records], dtype=float)
    objects = np.array([r["objects"] for r in records], dtype=float)
    layer_mean = scores.mean(1)
    return AlignmentReport(
        split=split, n_scenes=len(records), hallucinated_per_caption=float(halluc.mean()),
        captions_with_hallucination=float((halluc > 0).mean()), mean_score=[float(v) for v in scores.mean(0)],
        per_layer=[bootstrap_correlation(scores[:, layer], halluc, n_boot, seed) for layer in range(scores.shape[1])],
        layer_mean=bootstrap_correlation(layer_mean, halluc, n_boot, seed),
        layer_mean_given_objects=bootstrap_correlation(layer_mean, halluc, n_boot, seed, control=objects),
        layer_mean_given_mentions=bootstrap_correlation(layer_mean, halluc, n_boot, seed, control=mentions),
        mentions_vs_layer_mean=bootstrap_correlation(layer_mean, mentions, n_boot, seed))


def run_study(session, n: int, splits: Sequence[str] = SPLITS, seed: int = 0, n_boot: int = N_BOOT,
              params: dict | None = None, progress: bool = True) -> tuple[list[AlignmentReport], list[dict]]:
    """One report per split and one pooled over them, with every scene's record."""
    records = [scene_record(session, split, i, seed, params)
               for split in splits for i in tqdm(range(n), desc=f"alignment {split}", disable=not progress)]
    reports = [correlate(split, [r for r in records if r["split"] == split], n_boot, seed) for split in splits]
    if len(splits) > 1:
        reports.append(correlate("pooled", records, n_boot, seed))
    return reports, records


def _cell(c: Correlation) -> str:
    return f"{c.rho:+.3f} [{c.low:+.3f}, {c.high:+.3f}]"


def format_report(reports: list[AlignmentReport]) -> str:
    """A plain-text table: per split, the correlation per layer, for the layer mean, and the diagnostic."""
    lines = ["Spearman rho (alignment score vs hallucinated objects per caption), 95% bootstrap interval over scenes"]
    for r in reports:
        lines.append(f"== {r.split}: {r.n_scenes} scenes, {r.hallucinated_per_caption:.3f} hallucinated objects per "
                     f"caption, {r.captions_with_hallucination:.3f} of captions with one or more")
        lines.append("   mean score by layer: " + ", ".join(f"{v:+.3f}" for v in r.mean_score))
        for layer, c in enumerate(r.per_layer):
            lines.append(f"   layer {layer:<3} {_cell(c)}" + (f"  ({c.undefined} undefined resamples)" if c.undefined else ""))
        lines.append(f"   layer mean {_cell(r.layer_mean)}")
        lines.append(f"   layer mean, partial on the scene's object count: {_cell(r.layer_mean_given_objects)}")
        lines.append(f"   layer mean, partial on object words per caption: {_cell(r.layer_mean_given_mentions)}")
        lines.append(f"   diagnostic, layer mean vs object words per caption: {_cell(r.mentions_vs_layer_mean)}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studio.world.alignment_eval", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=300, help="scenes per split")
    parser.add_argument("--splits", default=",".join(SPLITS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-boot", type=int, default=N_BOOT)
    parser.add_argument("--text", default="after_image", help="text tokens pooled: after_image, all, prompt")
    parser.add_argument("--image-layer", type=int, default=None, help="hold the image mean at this layer")
    parser.add_argument("--json", default=None, help="write the reports and per-scene records here")
    args = parser.parse_args(argv)
    from studio.engine.session import ModelSession
    session = ModelSession.load(None, device="cpu")
    params = {"text": args.text, "image_layer": args.image_layer}
    reports, records = run_study(session, args.n, args.splits.split(","), args.seed, args.n_boot, params)
    print(format_report(reports))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"reports": [asdict(r) for r in reports], "records": records, "settings": vars(args)}, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
