"""The hallucination detector separates hallucinated from real object mentions on held-out
scenes, and grounds real ones, with the embedded model.

The thresholds sit below the 300-caption figures of `vlm-studio world eval --detectors`
(assets/MODEL_CARD.md) by a margin for the smaller sample used here.
"""
from studio.world.detect_eval import mention_records, summarise


def test_detector_auroc_and_grounding(embedded):
    records = mention_records(embedded, "cooccur", 40, seed=3, progress=False)
    report = summarise("cooccur", 40, records)
    assert report.n_hallucinated >= 10 and report.n_mentions - report.n_hallucinated >= 30
    assert max(report.auroc.values()) >= AUROC_FLOOR, report
    neutral = summarise("neutral", 30, mention_records(embedded, "neutral", 30, seed=3, progress=False))
    assert neutral.grounding_accuracy >= GROUNDING_FLOOR, neutral
