"""The hallucination detector on held-out scenes with the embedded model: what a detector
should do, better than chance. The measured figures (both scores' AUROC, grounding) are
reported in studio/assets/MODEL_CARD.md from `vlm-studio world eval --detectors`, not pinned here;
the mechanics are tested on hand-made cases in test_detector.py.
"""
from studio.world.detect_eval import mention_records, summarise

CHANCE_GROUNDING = 4 / 64  # an object's cell covers 2 x 2 of the 8 x 8 patches


def test_detector_scores_separate_hallucinated_mentions(embedded):
    report = summarise("cooccur", 40, mention_records(embedded, "cooccur", 40, seed=3, progress=False))
    assert report.n_hallucinated >= 10 and report.n_mentions - report.n_hallucinated >= 30
    assert report.auroc["internal_confidence"] >= 0.55, report


def test_grounding_is_well_above_chance(embedded):
    neutral = summarise("neutral", 30, mention_records(embedded, "neutral", 30, seed=3, progress=False))
    assert neutral.n_hallucinated == 0
    assert neutral.grounding_accuracy >= 2.5 * CHANCE_GROUNDING, neutral
