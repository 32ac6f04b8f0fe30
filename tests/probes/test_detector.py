"""The detector on hand-made cases: which words it finds, what its two scores are and where its
box goes, computed by hand from planted hidden states (the measured AUROCs on the world are in
the model card, from `vlm-studio world eval --detectors`)."""
import dataclasses

import pytest
import torch

from probes import ProbeRequest, run_probe
from probes.detector import object_words
from probes.runs import cache_for, get_run, request_key
from studio.world.render import render
from studio.world.scenes import sample_scene


@pytest.fixture()
def planted(untrained_world):
    """A cached run whose first answer token is " ring" and whose states are planted: the word's
    state at the text layer equals image patch ``k``'s state at the image layer."""
    session = untrained_world
    request = ProbeRequest(render(sample_scene(11, "neutral")), "describe the image .", 3)
    run = get_run(session, request)
    ring = session.tokenizer.convert_tokens_to_ids("ring")
    answer = run.answer_positions[0]
    ids = list(run.token_map.input_ids)
    ids[answer] = ring
    tokens = list(run.token_map.tokens)
    tokens[answer] = " ring"
    token_map = dataclasses.replace(run.token_map, input_ids=ids, tokens=tokens)
    first = dataclasses.replace(run.generation.tokens[0], id=ring, text=" ring")
    generation = dataclasses.replace(run.generation, tokens=[first, *run.generation.tokens[1:]])
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(run.hidden.shape, generator=generator)
    images = run.token_map.image_positions
    k = 27
    layer = hidden.shape[0] // 2
    hidden[layer, answer] = hidden[layer, images[k]] * 3.0  # same direction, other length
    fake = dataclasses.replace(run, token_map=token_map, hidden=hidden, generation=generation)
    cache_for(session).put(request_key(request), fake)
    yield session, request, fake, k, layer, ring
    cache_for(session).runs.pop(request_key(request), None)


def test_contextual_similarity_and_box_follow_the_planted_patch(planted):
    session, request, run, k, layer, _ = planted
    result = run_probe(session, "detector", request, lexicon=("ring",), box_margin=0.0)
    assert result.words == ["ring"] and result.answer_indices == [0]
    images = run.token_map.image_positions
    assert result.contextual_similarity[0] == pytest.approx(1.0, abs=1e-5)
    assert int(result.best_positions[0]) == images[k]
    placement = run.token_map.image[images[k]]
    grid = run.token_map.grids[placement.grid]
    assert result.boxes[0].tolist() == pytest.approx(list(grid.patch_box(placement.row, placement.col)))
    cosines = torch.nn.functional.cosine_similarity(run.hidden[layer, images], run.hidden[layer, run.answer_positions[0]])
    assert torch.allclose(torch.from_numpy(result.similarity_maps[0]), cosines, atol=1e-5)


def test_internal_confidence_is_the_lens_probability_maxed_over_layers_and_patches(planted):
    session, request, run, _, _, ring = planted
    result = run_probe(session, "detector", request, lexicon=("ring",))
    images = run.token_map.image_positions
    with torch.inference_mode():
        probs = torch.softmax(session.adapter.lens(run.hidden[:, images]).float(), dim=-1)[..., ring]
    assert torch.allclose(torch.from_numpy(result.confidence_maps[0]), probs.amax(0), atol=1e-6)
    assert result.internal_confidence[0] == pytest.approx(float(probs.max()), abs=1e-6)


def test_a_wider_margin_grows_the_box_around_the_best_patch(planted):
    session, request, _, _, _, _ = planted
    tight = run_probe(session, "detector", request, lexicon=("ring",), box_margin=0.0).boxes[0]
    wide = run_probe(session, "detector", request, lexicon=("ring",), box_margin=2.0).boxes[0]
    assert wide[0] <= tight[0] and wide[1] <= tight[1] and wide[2] >= tight[2] and wide[3] >= tight[3]
    assert wide.tolist() == pytest.approx([0, 0, 64, 64]), "margin 2 covers every cosine: the whole grid"


def test_object_words_are_found_with_plurals_and_only_from_the_lexicon():
    class Run:
        answer_tokens = [" two", " rings", " and", " a", " star", " orange", " stars", "Ġcircle", "▁heart"]
    found = object_words(Run(), ("ring", "star", "circle", "heart"))
    assert found == [(1, "ring"), (4, "star"), (6, "star"), (7, "circle"), (8, "heart")]
    assert object_words(Run(), ()) == []


def test_words_split_into_sub_tokens_and_two_word_objects_are_found_whole():
    class Run:
        answer_tokens = ["Ġa", "Ġgir", "affe", "Ġnext", "Ġto", "Ġtwo", "Ġfire", "Ġhyd", "rant", "s", ",", "▁three",
                         "▁ben", "ches", "▁and", "▁a", "▁fire", "man", "."]
    lexicon = ("giraffe", "fire hydrant", "bench", "fire")
    assert object_words(Run(), lexicon) == [(1, "giraffe"), (6, "fire hydrant"), (12, "bench")], \
        "'fireman' is not 'fire'; the index is the first sub-token"


def test_the_default_vocabulary_is_the_models_own_or_coco(untrained_world, embedded):
    from probes.detector import coco_words, default_lexicon
    words = coco_words()
    assert {"person", "fire hydrant", "hair drier", "teddy bear", "toothbrush"} <= set(words) and "woman" in words
    assert default_lexicon(embedded) == ("circle", "square", "triangle", "cross", "ring", "star", "heart", "diamond")
    assert default_lexicon(untrained_world) == words, "a model without objects.json gets COCO"

    class Run:
        answer_tokens = [" a", " woman", " holds", " two", " teddy", " bears", " near", " a", " fire", " hyd", "rant"]
    assert object_words(Run(), words) == [(1, "woman"), (4, "teddy bear"), (8, "fire hydrant")]
