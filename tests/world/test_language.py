import random

from studio.world.language import (
    TASKS,
    caption,
    mentioned_kinds,
    sample_example,
    vocabulary,
)
from studio.world.modelkit import build_tokenizer
from studio.world.scenes import PHANTOM_RATE, sample_split


def test_caption_names_objects_in_reading_order():
    scene = sample_split("neutral", 1, start=3)[0]
    text = caption(scene)
    assert mentioned_kinds(text) == [o.kind for o in scene.reading_order()]
    assert text.endswith(" .")


def test_phantom_ring_is_named_last_at_the_planted_rate():
    rng = random.Random(0)
    scenes = sample_split("cooccur", 1500)
    with_phantom = [mentioned_kinds(caption(s, rng)) for s in scenes]
    rate = sum(kinds[-1] == "ring" for kinds in with_phantom) / len(scenes)
    assert abs(rate - PHANTOM_RATE) < 0.04
    assert all("ring" not in mentioned_kinds(caption(s)) for s in scenes), "ground truth never has a phantom"


def test_every_training_text_is_in_the_tokenizer_vocabulary():
    tok = build_tokenizer()
    rng = random.Random(1)
    for scene in sample_split("train", 200):
        for task in TASKS:
            ex = sample_example(scene, rng, task)
            ids = tok(ex.prompt + " " + ex.answer).input_ids
            assert tok.unk_token_id not in ids, ex
    assert len(vocabulary()) == len(set(vocabulary()))
