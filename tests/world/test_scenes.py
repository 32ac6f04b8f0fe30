from collections import Counter

from studio.world.scenes import (
    COLOURS,
    COOCCUR_RATE,
    KINDS,
    MAX_OBJECTS,
    SIZES,
    USUAL_COLOUR,
    USUAL_COLOUR_RATE,
    Scene,
    sample_scene,
    sample_split,
)


def test_same_seed_same_scene_and_splits_differ():
    assert sample_scene(5).to_dict() == sample_scene(5).to_dict()
    assert sample_scene(5, "neutral").to_dict() != sample_scene(5, "cooccur").to_dict()


def test_scene_ranges_and_round_trip():
    for scene in sample_split("train", 300):
        assert 1 <= len(scene.objects) <= MAX_OBJECTS
        assert len(scene.kinds) == len(scene.objects), "kinds are unique within a scene"
        assert len({(o.row, o.col) for o in scene.objects}) == len(scene.objects)
        for o in scene.objects:
            assert o.kind in KINDS and o.colour in COLOURS and o.size in SIZES
        assert Scene.from_dict(scene.to_dict()) == scene
    seen = Counter(o.kind for s in sample_split("train", 300) for o in s.objects)
    assert set(seen) == set(KINDS)


def test_planted_biases_hold_in_training_stream():
    scenes = sample_split("train", 3000)
    with_cross = [s for s in scenes if "cross" in s.kinds]
    rate = sum("ring" in s.kinds for s in with_cross) / len(with_cross)
    assert abs(rate - COOCCUR_RATE) < 0.05
    objects = [o for s in scenes for o in s.objects]
    usual = sum(o.colour == USUAL_COLOUR[o.kind] for o in objects) / len(objects)
    assert abs(usual - USUAL_COLOUR_RATE) < 0.04


def test_held_out_splits_trigger_or_avoid_the_bias():
    assert all("cross" not in s.kinds for s in sample_split("neutral", 200))
    assert all("cross" in s.kinds and "ring" not in s.kinds for s in sample_split("cooccur", 200))
    assert all(o.colour != USUAL_COLOUR[o.kind] for s in sample_split("colour_prior", 200) for o in s.objects)
