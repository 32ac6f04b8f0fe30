import random

from studio.world.evaluate import (
    chair_score,
    cooccurrence,
    pope_questions,
    pope_score,
    training_frequency,
)
from studio.world.scenes import Scene, SceneObject


def test_pope_score_matches_hand_computation():
    pairs = [("yes", "yes"), ("no", "yes"), ("yes", "no"), ("no", "no"), ("Yes.", "yes")]
    s = pope_score(pairs)
    assert s.accuracy == 3 / 5
    precision, recall = 2 / 3, 2 / 3
    assert abs(s.f1 - 2 * precision * recall / (precision + recall)) < 1e-12
    assert s.yes_ratio == 3 / 5


def test_chair_counts_hallucinations_and_recall():
    scene = Scene([SceneObject("cross", "purple", "large", 0, 0), SceneObject("heart", "red", "small", 1, 2)], seed=0)
    s = chair_score([(scene, "a large purple cross , a small red ring ."), (scene, "a small red heart .")])
    assert s.chair_i == 1 / 3 and s.chair_s == 1 / 2 and s.recall == 2 / 4


def test_adversarial_negatives_pick_the_co_occurring_kind():
    scene = Scene([SceneObject("cross", "purple", "large", 0, 0)], seed=0)
    qs = pope_questions(scene, "adversarial", random.Random(0), training_frequency(1000), cooccurrence(1000))
    assert qs == [("is there a cross ?", "yes"), ("is there a ring ?", "no")]


def test_bootstrap_metrics_agree_with_the_plain_report():
    from studio.world.compare import metrics_from, scene_counts
    from studio.world.evaluate import summarise
    scenes = [Scene([SceneObject("cross", "purple", "large", 0, 0)], seed=1),
              Scene([SceneObject("heart", "red", "small", 1, 2), SceneObject("star", "yellow", "large", 2, 2)], seed=2)]
    records = [{"scene": scenes[0].to_dict(), "caption": "a large purple cross , a small orange ring .",
                "pope": {"random": [["q", "yes", "yes"], ["q", "no", "yes"]]},
                "questions": [["colour", "q", "purple", "purple"], ["size", "q", "large", "small"]]},
               {"scene": scenes[1].to_dict(), "caption": "a small red heart .",
                "pope": {"random": [["q", "yes", "no"], ["q", "no", "no"]]},
                "questions": [["colour", "q", "red", "orange "], ["size", "q", "small", "small"]]}]
    report = summarise("x", scenes, records)
    counts = [scene_counts(r) for r in records]
    metrics = metrics_from({k: sum(c[k] for c in counts) for k in counts[0]})
    assert metrics["pope_random_accuracy"] == report.pope["random"].accuracy == 0.5
    assert metrics["pope_random_f1"] == report.pope["random"].f1
    assert (metrics["chair_i"], metrics["chair_s"], metrics["recall"]) == (
        report.chair.chair_i, report.chair.chair_s, report.chair.recall)
    assert metrics["colour_accuracy"] == report.questions["colour"] == 0.5
    assert metrics["size_accuracy"] == report.questions["size"] == 0.5
