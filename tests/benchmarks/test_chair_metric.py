"""CHAIR: mentions (synonyms, plurals, word runs), ground truth, and the three numbers."""
from __future__ import annotations

import pytest

from studio.benchmarks.chair import (
    CaptionCounts,
    caption_counts,
    chair_from_counts,
    chair_score,
    coco_vocabulary,
    ground_truth,
    mentioned_objects,
    pluralize,
    singularize,
    vocabulary_for,
    vocabulary_from_categories,
)

WORLD_KINDS = ("circle", "square", "triangle", "cross", "ring", "star", "heart", "diamond")


@pytest.fixture(scope="module")
def coco():
    return coco_vocabulary()


@pytest.mark.parametrize(("caption", "objects"), [
    ("A man rides a horse.", ["person", "horse"]),                      # synonym: man -> person
    ("Two dogs play with a puppy.", ["dog", "dog"]),                    # plural; puppy is a dog
    ("A man and two women.", ["person", "person"]),                     # irregular plural
    ("Kids eat hot dogs.", ["person", "hot dog"]),                      # hot dog is not a dog
    ("A girl hugs her teddy bears.", ["person", "teddy bear"]),         # teddy bear is not a bear
    ("A baby bird and an adult elephant.", ["bird", "elephant"]),       # and no person
    ("A passenger train at the station.", ["train"]),                   # and no person
    ("The seat of the toilet is up.", ["toilet"]),                      # seat is no chair beside a toilet
    ("A wooden seat.", ["chair"]),
    ("A man in a bow tie.", ["person", "tie"]),
    ("A batter waits at home plate.", []),
    ("Wine glasses on the dining table.", ["wine glass", "dining table"]),
    ("Knives, mice and buses near benches with ponies.", ["knife", "mouse", "bus", "bench", "horse"]),
    ("A motor bike and a cheesecake.", ["motorcycle", "cake"]),         # the reference list's slips fixed
    ("The woman's bikes.", ["person", "bicycle"]),
    ("Skis and a pair of scissors.", ["skis", "scissors"]),             # nouns already plural stay
    ("A man skiing.", ["person"]),                                      # verbs are not lemmatised
    ("A dog, a dog and a dog.", ["dog", "dog", "dog"]),                 # once per mention, as the reference
])
def test_coco_mentions(coco, caption, objects):
    assert mentioned_objects(caption, coco) == objects


def test_singularize_accepts_only_known_forms():
    known = frozenset({"horse", "bus", "tie", "knife", "glass", "dog"})
    assert [singularize(w, known) for w in ("horses", "buses", "ties", "knives", "glasses", "dogs")] == \
        ["horse", "bus", "tie", "knife", "glass", "dog"]
    assert singularize("grass", known) == "grass" and singularize("bus", known) == "bus"
    assert singularize("cats", known) == "cats"  # unknown singular: left alone


def test_pluralize():
    assert [pluralize(w) for w in ("circle", "cross", "box", "peach", "berry", "toy", "man", "traffic cone")] == \
        ["circles", "crosses", "boxes", "peaches", "berries", "toys", "men", "traffic cones"]


def test_hand_computed_chair(coco):
    truths = [
        ground_truth(["dog", "person"], ["A man walks his dog on a leash."], coco),
        ground_truth(["hot dog"], ["A hot dog with mustard on a table."], coco),
        ground_truth(["cat"], ["A cat sleeps on a sofa."], coco),
    ]
    assert truths == [{"dog", "person"}, {"hot dog", "dining table"}, {"cat", "couch"}]
    captions = [
        "Two dogs and a man near a teddy bear.",                 # teddy bear hallucinated; recalls dog, person
        "A hot dog on a plate.",                                 # nothing hallucinated; misses the table
        "A cat sleeping on a couch next to a dog and another dog.",  # dog hallucinated twice
    ]
    counts = [caption_counts(c, t, coco) for c, t in zip(captions, truths)]
    assert counts == [
        CaptionCounts(hallucinated=1, mentions=3, recalled=2, objects=2, bad_caption=1, hallucinated_objects=("teddy bear",)),
        CaptionCounts(hallucinated=0, mentions=1, recalled=1, objects=2, bad_caption=0),
        CaptionCounts(hallucinated=2, mentions=4, recalled=2, objects=2, bad_caption=1, hallucinated_objects=("dog",)),
    ]
    score = chair_score(zip(captions, truths), coco)
    assert score.chair_s == pytest.approx(2 / 3)
    assert score.chair_i == pytest.approx(3 / 8)
    assert score.recall == pytest.approx(5 / 6)
    assert (score.n_captions, score.n_mentions, score.n_hallucinated, score.n_objects, score.n_recalled) == (3, 8, 3, 6, 5)
    # a bootstrap resample (caption 2 twice, caption 3 once) is scored from the same counts
    resampled = chair_from_counts([counts[1], counts[1], counts[2]])
    assert (resampled.chair_s, resampled.chair_i, resampled.recall) == (pytest.approx(1 / 3), pytest.approx(2 / 6),
                                                                         pytest.approx(4 / 6))


def test_no_mentions_scores_zero(coco):
    score = chair_score([("A view of the sky.", frozenset({"bird"}))], coco)
    assert (score.chair_s, score.chair_i, score.recall, score.n_mentions) == (0.0, 0.0, 0.0, 0)


def test_world_vocabulary_on_world_captions():
    world = vocabulary_from_categories(WORLD_KINDS)
    caption = "a small red circle , a large blue ring , two purple crosses ."
    assert mentioned_objects(caption, world) == ["circle", "ring", "cross"]
    truth = ground_truth(["circle", "cross"], ["a large green circle , a small orange cross ."], world)
    assert truth == {"circle", "cross"}
    counts = caption_counts(caption, truth, world)
    assert (counts.hallucinated, counts.mentions, counts.recalled, counts.objects, counts.hallucinated_objects) == \
        (1, 3, 2, 2, ("ring",))
    assert mentioned_objects("a man and a dog", world) == []  # no COCO words in a world vocabulary


def test_world_vocabulary_agrees_with_world_eval():
    from studio.world.evaluate import chair_counts
    from studio.world.language import caption
    from studio.world.scenes import sample_split
    world = vocabulary_from_categories(WORLD_KINDS)
    scenes = sample_split("neutral", 20)
    hallucinated = 0
    for scene, other in zip(scenes, scenes[1:] + scenes[:1]):
        text = caption(other)  # another scene's caption: some of it is hallucinated
        counts = caption_counts(text, frozenset(scene.kinds), world)
        assert (counts.hallucinated, counts.mentions, counts.recalled) == chair_counts(scene, text)
        hallucinated += counts.hallucinated
    assert hallucinated > 0


def test_multiword_categories_are_runs():
    vocab = vocabulary_from_categories(["Traffic  Cone", "cone", "T-Shirt"])
    assert mentioned_objects("Two traffic cones, a cone and t-shirts.", vocab) == ["traffic cone", "cone", "t-shirt"]
    assert vocab.canonical("TRAFFIC cone") == "traffic cone"


def test_vocabulary_choice(coco):
    assert vocabulary_for(sorted(coco.names, reverse=True)) is coco
    assert len(coco.names) == 80
    assert vocabulary_for(WORLD_KINDS).names == set(WORLD_KINDS)
    assert vocabulary_for(sorted(coco.names)[:79]) is not coco  # a subset is no COCO
    assert mentioned_objects("A man.", vocabulary_for(sorted(coco.names)[:79])) == []
