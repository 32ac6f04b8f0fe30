"""Sparse Attention Vectors: the head choice finds a planted head and the vote of the chosen
heads is right; the ``attention_output`` read equals the o_proj input an independent hook sees
(and o_proj of it is the attention's output) while leaving the model's output bit for bit; a
saved classifier loads equal; bad settings are refused with a clear message."""
import numpy as np
import pytest
import torch

from studio.engine.errors import InputError, StudioError
from studio.engine.hooks import hook_count
from studio.heads.sav import SAVClassifier, SAVConfig, capture_heads, fit_sav, last_token_heads, majority
from studio.interventions import Intervention, output_projection
from studio.world.render import render
from studio.world.scenes import sample_scene
from views.heads import head_map

LAYERS, HEADS, WIDTH = 3, 4, 8


def planted(n_per_class: int, signal: dict[tuple[int, int], float], seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """Features [n, layers, heads, width] of two classes; head (l, h) in ``signal`` carries class
    direction +e0 / -e0 of that strength over unit noise, every other head is noise alone."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2 * n_per_class, LAYERS, HEADS, WIDTH, generator=generator)
    labels = ["cat"] * n_per_class + ["dog"] * n_per_class
    sign = torch.tensor([1.0] * n_per_class + [-1.0] * n_per_class)
    for (layer, head), strength in signal.items():
        x[:, layer, head, 0] += strength * sign
    return x, labels


def test_the_top_head_is_the_one_planted_head():
    x, labels = planted(20, {(2, 1): 4.0})
    fit = fit_sav(x, labels, SAVConfig(k=1))
    assert fit.heads == [(2, 1)]
    assert fit.head_accuracy[2, 1] == 1.0 and fit.head_accuracy.max() == 1.0
    assert np.sort(fit.head_accuracy.flatten())[-2] < 0.9, "noise heads are not near perfect"
    test, truth = planted(50, {(2, 1): 4.0}, seed=1)
    assert fit.predict(test) == truth


def test_the_vote_of_the_top_heads_is_right_where_each_head_alone_errs():
    signal = {(0, 0): 1.0, (1, 2): 1.0, (2, 3): 1.0}  # each head alone ~84% right; the vote of three ~94%
    x, labels = planted(200, signal)
    fit = fit_sav(x, labels, SAVConfig(k=3))
    assert sorted(fit.heads) == sorted(signal)
    test, truth = planted(400, signal, seed=2)
    single = [np.mean(np.array(SAVClassifier(fit.classes, [h], fit.means[:, [i]], fit.head_accuracy).predict(test))
                      == np.array(truth)) for i, h in enumerate(fit.heads)]
    voted = np.mean(np.array(fit.predict(test)) == np.array(truth))
    assert max(single) < 0.9 < voted
    votes = fit.votes(test)
    assert votes.shape == (800, 2) and (votes.sum(1) == 3).all()
    assert [fit.classes[i] for i in votes.argmax(1)] == fit.predict(test), "an odd vote has no ties"


def test_a_tied_vote_goes_to_the_class_the_best_ranked_head_chose():
    assert majority([1, 0, 0, 1]) == 1
    assert majority([0, 1, 1]) == 1
    assert majority([2, 0, 1]) == 2


def test_save_and_load_give_the_same_classifier(tmp_path):
    x, labels = planted(10, {(1, 1): 3.0})
    fit = fit_sav(x, labels, SAVConfig(k=2), model="abc", task="planted")
    fit.save(tmp_path)
    back = SAVClassifier.load(tmp_path)
    assert back.classes == fit.classes and back.heads == fit.heads and back.config == fit.config
    assert torch.equal(back.means, fit.means)
    assert np.array_equal(back.head_accuracy, fit.head_accuracy)
    assert (back.n_examples, back.model, back.task) == (20, "abc", "planted")
    assert back.predict(x) == fit.predict(x)
    assert not list(tmp_path.glob("*.pkl")) and not list(tmp_path.glob("*.pt"))


def test_bad_settings_are_refused():
    x, labels = planted(5, {(0, 0): 3.0})
    with pytest.raises(InputError, match="positive integer"):
        SAVConfig(k=0)
    with pytest.raises(InputError, match="fraction"):
        SAVConfig(fraction=0.0)
    with pytest.raises(InputError, match="more than the model's 12 attention heads"):
        fit_sav(x, labels, SAVConfig(k=13))
    with pytest.raises(InputError, match="at least two classes"):
        fit_sav(x, ["cat"] * len(labels))
    with pytest.raises(InputError, match="one label per example"):
        fit_sav(x, labels[:-1])
    fit = fit_sav(x, labels, SAVConfig(k=2))
    with pytest.raises(InputError, match="this classifier reads"):
        fit.predict(torch.zeros(1, LAYERS, HEADS + 1, WIDTH))
    with pytest.raises(InputError, match="no SAV classifier"):
        SAVClassifier.load("/nonexistent-sav-folder")


def test_the_head_map_outlines_the_chosen_heads_in_rank_order():
    accuracy = np.arange(12, dtype=float).reshape(3, 4) / 12
    fig = head_map(accuracy, [(2, 3), (0, 1)])
    assert np.array_equal(np.array(fig.data[0].z), accuracy)
    boxes = [(s.x0 + 0.5, s.y0 + 0.5) for s in fig.layout.shapes]
    assert boxes == [(3, 2), (1, 0)], "x is the head, y the layer"
    assert [(a.x, a.y, a.text) for a in fig.layout.annotations] == [(3, 2, "#1"), (1, 0, "#2")]


def test_the_paper_fraction_keeps_one_of_sixteen_heads_and_twenty_of_784():
    assert SAVConfig().heads_for(16) == 1
    assert SAVConfig().heads_for(784) == 20


def _inputs(session):
    scenes = [sample_scene(i, "neutral") for i in range(2)]
    return session.batch_inputs([render(s) for s in scenes], ["is there a circle ?", "what color is the star ?"])


def test_the_capture_is_the_o_proj_input_split_into_heads_and_changes_nothing(embedded):
    session = embedded
    inputs = _inputs(session)
    attention = session.adapter.attention_modules()
    seen: dict[int, torch.Tensor] = {}
    outputs: dict[int, torch.Tensor] = {}
    handles = [attention[i].o_proj.register_forward_pre_hook(
        lambda m, args, i=i: seen.__setitem__(i, args[0].detach().clone())) for i in range(session.n_layers)]
    handles += [attention[i].register_forward_hook(
        lambda m, args, out, i=i: outputs.__setitem__(i, out[0].detach().clone())) for i in range(session.n_layers)]
    try:
        with torch.inference_mode():
            plain = session.model(**inputs).logits
    finally:
        for handle in handles:
            handle.remove()
    before = hook_count(session.model)
    heads = capture_heads(session, inputs)
    assert hook_count(session.model) == before
    n_heads = session.model.config.text_config.num_attention_heads
    assert heads.shape == (2, inputs["input_ids"].shape[1], session.n_layers, n_heads, 192 // n_heads)
    for i in range(session.n_layers):
        by_hand = seen[i].reshape(*seen[i].shape[:2], n_heads, -1)
        assert torch.equal(heads[:, :, i], by_hand)
        assert torch.equal(heads[:, :, i, 2], seen[i][..., 2 * 48:3 * 48]), "head 2 is the third slice"
        with torch.inference_mode():
            assert torch.allclose(attention[i].o_proj(heads[:, :, i].flatten(-2)), outputs[i], atol=1e-6)
    captured: list = []
    with_read = session.call(lambda: session.model(**inputs).logits, [
        Intervention("attention_output", 1, lambda v: captured.append(v) or None)])
    assert torch.equal(with_read, plain), "the read leaves the output bit for bit"
    assert len(captured) == 1
    last = last_token_heads(session, [render(sample_scene(i, "neutral")) for i in range(2)],
                            ["is there a circle ?", "what color is the star ?"])
    assert torch.equal(last, heads[:, -1])


def test_the_attention_output_site_refuses_an_edit(embedded):
    inputs = _inputs(embedded)
    with pytest.raises(StudioError, match="read only"):
        embedded.call(lambda: embedded.model(**inputs), [Intervention("attention_output", 0, lambda v: v * 0)])
    assert output_projection(embedded.adapter.attention_modules()[0]) is embedded.adapter.attention_modules()[0].o_proj
    with pytest.raises(StudioError, match="has no o_proj"):
        output_projection(torch.nn.Linear(2, 2))


def test_the_capture_runs_on_another_family():
    from studio.engine.session import ModelSession
    from tiny_models import build_tiny
    session = ModelSession(*build_tiny("qwen2_vl"))
    inputs = session.batch_inputs([render(sample_scene(0, "neutral"))], ["is there a circle ?"])
    heads = capture_heads(session, inputs)
    assert heads.shape[2:] == (session.n_layers, 4, 16)
    seen: list = []
    handle = session.adapter.attention_modules()[1].o_proj.register_forward_pre_hook(
        lambda m, args: seen.append(args[0].detach().clone()))
    try:
        with torch.inference_mode():
            session.model(**inputs)
    finally:
        handle.remove()
    assert torch.equal(heads[:, :, 1].flatten(-2), seen[0])


def test_world_items_carry_their_ground_truth():
    from studio.world.sav_eval import question_items
    for scene, prompt, label in question_items("exist", "cooccur", 5, 0):
        kind = prompt.split()[3]
        assert (kind in scene.kinds) == (label == "yes")
        assert label == "yes" or kind == "ring", "the cooccur absent kind is the hallucinated ring"
    for scene, prompt, label in question_items("colour", "colour_prior", 5, 0):
        obj = scene.find(prompt.split()[4])
        assert obj is not None and obj.colour == label


def test_few_shot_takes_the_first_of_each_class_and_the_bootstrap_pairs_scenes():
    from studio.world.sav_eval import accuracy, bootstrap, few_shot
    assert few_shot(["a", "b", "a", "a", "b", "c"], shots=2) == [0, 1, 2, 4, 5]
    right = np.array([True, True, False, True])
    truth = np.array(["x", "x", "y", "y"])
    assert accuracy(right, truth, balanced=False) == 0.75 and accuracy(right, truth, balanced=True) == 0.75
    assert accuracy(np.array([True, True, True, False]), np.array(["x", "x", "x", "y"]), balanced=True) == 0.5
    values = np.arange(40, dtype=float)
    sav_ci, other_ci, diff_ci = bootstrap(list(range(20)) * 2, lambda idx: (values[idx].mean(), values[idx].mean() - 1))
    assert sav_ci[0] < values.mean() < sav_ci[1]
    assert diff_ci == [1.0, 1.0], "the difference is paired: the same resample for both"
    one_scene = bootstrap([7] * 5, lambda idx: (float(len(idx)), 0.0))
    assert one_scene[0] == [5.0, 5.0], "a drawn scene brings all its items"


def test_variance_share_is_one_where_the_group_sets_the_vector_and_small_for_noise():
    from studio.world.sav_eval import variance_share
    x, labels = planted(50, {})
    x[:, 0, 0] = torch.tensor([[1.0] * WIDTH if label == "cat" else [-1.0] * WIDTH for label in labels])
    share = variance_share(x, labels)
    assert share.shape == (LAYERS, HEADS)
    assert share[0, 0] == pytest.approx(1.0)
    assert share[1:].max() < 0.1, "a random two-way split explains about 1 / n of noise"


def test_the_text_cue_marks_only_a_ring_named_last_after_a_cross():
    from studio.world.sav_eval import text_cue
    assert text_cue(["cross", "star", "ring"], 2) == 0.0
    assert text_cue(["ring", "cross", "star"], 0) == 1.0, "not last"
    assert text_cue(["star", "ring"], 1) == 1.0, "no cross before it"
    assert text_cue(["cross", "star", "ring"], 1) == 1.0, "not a ring"
