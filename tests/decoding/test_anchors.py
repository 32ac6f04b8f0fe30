"""Generative anchors (studio.decoding.anchors): identities that must hold exactly, the edit
against a hand computation on independently captured states, the world's exact renderer, and
the error for a family without a text-to-image model."""
import numpy as np
import pytest
import torch

from studio.decoding import STRATEGIES, strategy_by_name
from studio.decoding.anchors import RENDERERS, Renderer, anchor_edit
from studio.engine.errors import InputError
from studio.engine.session import ModelSession
from studio.interventions import read
from studio.world.anchors import parse_caption, register, render_caption, scene_for_caption, truth_anchor_check
from studio.world.language import CAPTION_PROMPT, caption
from studio.world.render import render
from studio.world.scenes import sample_scene
from tiny_models import build_tiny, sample_image

TOKENS = 12


@pytest.fixture(scope="module")
def world(embedded):
    register()
    scene = sample_scene(3, "cooccur")
    return embedded, embedded.prepare(render(scene), CAPTION_PROMPT), scene


def _logits(session, prepared, strategy, batch=None):
    """Generated ids and the raw logits of every step of the answer row (of ``batch`` if given)."""
    batch = batch or strategy.batch(session, prepared)
    out, _ = session._decode(batch, strategy, TOKENS, (), output_logits=True)
    return out.sequences[0].tolist(), torch.stack([step[0] for step in out.logits])


def test_strength_zero_is_greedy_bit_for_bit(world):
    session, prepared, _ = world
    greedy = _logits(session, prepared, strategy_by_name("greedy"))
    off = _logits(session, prepared, strategy_by_name("anchors", pull=0.0))
    assert off[0] == greedy[0] and torch.equal(off[1], greedy[1])


@pytest.fixture
def one_thread():
    """One BLAS thread: with more, identical rows of a batch can differ in the last bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_positive_anchor_equal_to_negative_is_a_no_op(world, monkeypatch, one_thread):
    """The real image as its own anchor: every edit is h + a (h_pos - h_neg) = h, exactly, so the
    answer row decodes as the same three rows decoded greedily with no edit at all."""
    session, prepared, _ = world
    monkeypatch.setitem(RENDERERS, "same", Renderer("same", lambda image, text: image, lambda s: False))
    strategy = strategy_by_name("anchors", renderer="same", pull=2.0)
    batch = strategy.batch(session, prepared)
    assert batch.inputs["input_ids"].shape[0] == 3
    edited = _logits(session, prepared, strategy, batch)
    unedited = _logits(session, prepared, strategy_by_name("greedy"), batch)
    assert edited[0] == unedited[0] and torch.equal(edited[1], unedited[1])
    assert edited[0] == _logits(session, prepared, strategy_by_name("greedy"))[0]


def test_edit_formula_on_rows():
    value = torch.randn(6, 3, 4)
    out = anchor_edit(value, 2, pull=0.25, push=0.75)
    h, pos, neg = value[:2], value[2:4], value[4:]
    assert torch.allclose(out[:2], h + 0.25 * (pos - h) - 0.75 * (neg - h))
    assert torch.equal(out[2:], value[2:]), "anchor rows are never edited"


def test_edit_equals_hand_computation_on_captured_states(world):
    """At the edited layer, the answer's state is h_pos + a (h_pos - h_neg) at the last prompt
    position and every generated one, with h_pos / h_neg captured by plain forwards of the real
    image and of the rendered caption; other positions and the layer below are untouched."""
    session, prepared, _ = world
    strength, layer = 0.6, 1
    strategy = strategy_by_name("anchors", pull=strength, layers=str(layer))
    seen: dict[int, list] = {layer - 1: [], layer: []}
    reads = [read("residual", i, lambda v, i=i: seen[i].append(v[0].clone())) for i in seen]
    generation = session.generate(prepared, TOKENS, strategy, interventions=reads)
    fed = [t.id for t in generation.tokens][:-1]  # the last token is chosen, never fed back
    got = {i: torch.cat(states)[:prepared.length + len(fed)] for i, states in seen.items()}
    anchor = render_caption(prepared.image, generation.trace["caption"])
    positive = session.forward(prepared, capture=True, extra_ids=fed).hidden
    negative = session.forward(session.prepare(anchor, prepared.prompt), capture=True, extra_ids=fed).hidden
    edited = slice(prepared.length - 1, None)
    expected = positive[layer].clone()
    expected[edited] += strength * (positive[layer][edited] - negative[layer][edited])
    assert torch.allclose(got[layer], expected, atol=1e-5)
    assert not torch.allclose(got[layer][edited], positive[layer][edited], atol=1e-3), "the anchor differs"
    assert torch.allclose(got[layer - 1], positive[layer - 1], atol=1e-5)


def test_world_anchor_is_the_render_of_the_scene_the_caption_describes(world):
    session, _, _ = world
    strategy = strategy_by_name("anchors")
    for seed in range(6):
        scene = sample_scene(seed, "neutral")
        text = caption(scene)
        described = scene_for_caption(text)
        assert caption(described) == text
        assert [(o.kind, o.colour, o.size) for o in described.reading_order()] == \
            [(o.kind, o.colour, o.size) for o in scene.reading_order()]
        anchor = strategy.anchors(session, [render(scene)], [text])[0]
        assert np.array_equal(np.asarray(anchor), np.asarray(render(described)))
    assert parse_caption("a small red ring , a blue star , a large green heart .") == [
        ("ring", "red", "small"), ("heart", "green", "large")]


def test_greedy_caption_is_the_caption_exposed(world):
    session, prepared, _ = world
    greedy = session.generate(prepared, 40)
    out = session.generate(prepared, 4, strategy_by_name("anchors", caption_tokens=40))
    assert out.trace["caption"] == session.decode_answer([t.id for t in greedy.tokens])


def test_family_without_text_to_image_is_a_clear_error():
    session = ModelSession(*build_tiny("llava"))
    prepared = session.prepare(sample_image(32, 32), "what is this ?")
    with pytest.raises(InputError, match="no text-to-image model for anchors: .*llava"):
        session.generate(prepared, 2, strategy_by_name("anchors"))
    with pytest.raises(InputError, match="no text-to-image model named 'nope'"):
        strategy_by_name("anchors", renderer="nope").check(session)
    assert "anchors" in STRATEGIES


@pytest.mark.parametrize("params,needle", [({"pull": -1}, "pull"), ({"push": 11}, "push"),
                                           ({"layers": "0,x"}, "layers"), ({"caption_tokens": 0}, "caption_tokens")])
def test_bad_parameters_name_the_valid_range(params, needle):
    with pytest.raises(InputError, match=needle):
        strategy_by_name("anchors", **params)


def test_layer_beyond_depth(world):
    session, prepared, _ = world
    with pytest.raises(InputError, match="beyond the model's depth"):
        session.generate(prepared, 2, strategy_by_name("anchors", layers=str(session.n_layers)))


def test_truth_check_counts_unchanged_captions(world):
    session, _, _ = world
    off = truth_anchor_check(session, 3, "neutral", pull=0.0)
    assert off.unchanged == 1.0 and off.diff_to_greedy["chair_i"] == 0.0 and off.params == {"pull": 0.0}
