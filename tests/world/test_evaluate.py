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
