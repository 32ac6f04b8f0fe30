"""Score the hallucination detector on ground truth: AUROC and grounding accuracy per split.

Every object word in the model's captions is a mention; it is hallucinated when its kind is
not in the scene. A detector score should be *lower* for hallucinated mentions, so AUROC is
the probability that a random real mention outscores a random hallucinated one. Grounding
accuracy is the share of real mentions whose best patch's centre lies inside the object's
true pixel box.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from probes import ProbeRequest, run_probe
from studio.adapters import PatchGrid
from studio.world.language import CAPTION_PROMPT
from studio.world.render import object_box, render
from studio.world.scenes import KINDS, sample_scene

SCORES = ("internal_confidence", "contextual_similarity")


@dataclass
class DetectorReport:
    split: str
    n_captions: int
    n_mentions: int
    n_hallucinated: int
    auroc: dict
    grounding_accuracy: float


def auroc(real: np.ndarray, hallucinated: np.ndarray) -> float:
    """P(score of a real mention > score of a hallucinated one), ties counted half (Mann-Whitney)."""
    if len(real) == 0 or len(hallucinated) == 0:
        return float("nan")
    greater = (real[:, None] > hallucinated[None, :]).sum()
    ties = (real[:, None] == hallucinated[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(real) * len(hallucinated)))


def scene_mentions(session, split: str, i: int, seed: int = 0, detector_params: dict | None = None) -> list[dict]:
    """One record per object word in the caption of scene ``i`` of ``split`` (the detector's
    scores, whether the word is hallucinated, whether its best patch lies in the object's box)."""
    scene = sample_scene(seed * 100_000 + 50_000 + i, split)
    result: Any = run_probe(session, "detector", ProbeRequest(render(scene), CAPTION_PROMPT, 40), lexicon=KINDS,
                            **(detector_params or {}))
    records = []
    for k, word in enumerate(result.words):
        obj = scene.find(word)
        grid, row, col = result.patch[int(result.best_positions[k])]
        x0, y0, x1, y1 = PatchGrid.from_dict(result.grids[grid]).patch_box(row, col)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        inside = None
        if obj is not None:
            bx0, by0, bx1, by1 = object_box(obj)
            inside = bool(bx0 <= cx < bx1 and by0 <= cy < by1)
        records.append({"scene": i, "word": word, "hallucinated": obj is None, "grounded": inside,
                        **{s: float(getattr(result, s)[k]) for s in SCORES}})
    return records


def mention_records(session, split: str, n: int, seed: int = 0, progress: bool = True,
                    detector_params: dict | None = None) -> list[dict]:
    """One record per object word in the captions of ``n`` scenes of ``split``."""
    return [record for i in tqdm(range(n), desc=f"detector {split}", disable=not progress)
            for record in scene_mentions(session, split, i, seed, detector_params)]


def summarise(split: str, n: int, records: list[dict]) -> DetectorReport:
    hallucinated = [r for r in records if r["hallucinated"]]
    real = [r for r in records if not r["hallucinated"]]
    scores = {s: auroc(np.array([r[s] for r in real]), np.array([r[s] for r in hallucinated])) for s in SCORES}
    grounded = [r["grounded"] for r in real]
    return DetectorReport(split=split, n_captions=n, n_mentions=len(records), n_hallucinated=len(hallucinated),
                          auroc=scores, grounding_accuracy=float(np.mean(grounded)) if grounded else float("nan"))


def format_detector_table(reports: list[DetectorReport]) -> str:
    lines = [f"{'split':<14}{'captions':>9}{'mentions':>9}{'halluc.':>8}"
             + "".join(f"{'AUROC ' + s[:12]:>22}" for s in SCORES) + f"{'grounding':>11}"]
    for r in reports:
        lines.append(f"{r.split:<14}{r.n_captions:>9}{r.n_mentions:>9}{r.n_hallucinated:>8}"
                     + "".join(f"{r.auroc[s]:>22.3f}" for s in SCORES) + f"{r.grounding_accuracy:>11.3f}")
    return "\n".join(lines)


def report_dicts(reports: list[DetectorReport]) -> dict:
    return {r.split: asdict(r) for r in reports}
