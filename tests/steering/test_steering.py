"""Steering through request-scoped interventions: alpha 0 is the plain model bit for bit, edits leave nothing behind,
batched rows stay independent, and bad directions/alphas/layers get clear messages."""
import pytest
import torch

from studio.engine.errors import InputError
from studio.engine.hooks import hook_count
from studio.steering.fit import DirectionFit
from studio.steering.preference import Preference, preference
from studio.steering.vectors import Steering, steered_answers
from studio.world.conflict import STYLES, ConflictItem, sample_items
from studio.world.render import render
from studio.world.scenes import sample_scene


def _directions(session, seed=0):
    hidden = session.model.config.text_config.hidden_size
    return torch.randn(session.n_layers, hidden, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", ["untrained_world", "embedded"])
def test_alpha_zero_is_bit_identical_and_no_hook_remains(family, request):
    session = request.getfixturevalue(family)
    prepared = session.prepare(render(sample_scene(5, "neutral")), "describe the image .")
    plain = [t.id for t in session.generate(prepared, 10).tokens]
    before = hook_count(session.model)
    edits = Steering(_directions(session), (0, 1), 0.0).interventions()
    assert [t.id for t in session.generate(prepared, 10, interventions=edits).tokens] == plain
    assert torch.equal(session.forward(prepared, interventions=edits).logits, session.forward(prepared).logits)
    strong = session.forward(prepared, interventions=Steering(_directions(session), (1,), 5.0).interventions())
    assert (strong.logits - session.forward(prepared).logits).abs().max() > 1e-2
    assert hook_count(session.model) == before
    assert [t.id for t in session.generate(prepared, 10).tokens] == plain


def test_batched_rows_match_their_single_runs(embedded):
    images = [render(sample_scene(i, "neutral")) for i in range(3)]
    prompts = ["describe the image .", "what color is the circle ?", "how many objects are there ?"]
    steering = Steering(_directions(embedded, 1), (1,), 5.0)
    together = steered_answers(embedded, images, prompts, 12, steering)
    alone = [steered_answers(embedded, [i], [p], 12, steering)[0] for i, p in zip(images, prompts)]
    assert together == alone
    assert together != embedded.answer_batch(images, prompts, 12), "the steering must change something"
    assert steered_answers(embedded, images, prompts, 12, Steering(_directions(embedded), (1,), 0.0)) == \
        embedded.answer_batch(images, prompts, 12)
    text_only = Steering(_directions(embedded, 1), (1,), 1.5, "prompt")
    together = steered_answers(embedded, images, prompts, 12, text_only)
    assert together == [steered_answers(embedded, [i], [p], 12, text_only)[0] for i, p in zip(images, prompts)]


@pytest.mark.parametrize("alpha,layers,needle", [(1e6, [1], "alpha"), (float("nan"), [1], "alpha"),
                                                  (1.0, [99], "out of range"), (1.0, [], "at least one layer")])
def test_bad_steering_settings(untrained_world, alpha, layers, needle):
    with pytest.raises(InputError, match=needle):
        Steering(_directions(untrained_world), tuple(layers), alpha)


def test_direction_files_are_checked_against_the_model(untrained_world, embedded, tmp_path):
    fit = DirectionFit(_directions(untrained_world), [0.5] * untrained_world.n_layers, 3, 4)
    fit.save(tmp_path)
    assert torch.equal(DirectionFit.load(tmp_path, untrained_world).directions, fit.directions)
    with pytest.raises(InputError, match="width"):
        DirectionFit.load(tmp_path, embedded)
    with pytest.raises(InputError, match="no preference direction"):
        DirectionFit.load(tmp_path / "missing", embedded)


def test_conflict_items_and_preference_counts():
    for style in STYLES:
        items = sample_items(30, style)
        assert all(i.conflict for i in items) and all(i.image_answer != i.text_answer for i in items)
        assert all(i.text_answer in i.prompt for i in items)
    matched = sample_items(10, "neutral", conflict=False)
    assert not any(i.conflict for i in matched)
    item = ConflictItem(sample_scene(0, "neutral"), "x", "colour", "neutral", "red", "blue")
    assert [item.follows(a) for a in ("red", "blue .", "green", "")] == ["image", "text", "other", "other"]
    counts = preference([item] * 3, ["red", "blue", "red"])
    assert counts["all"] == Preference(2, 1, 0) and counts["neutral"].image_ratio == pytest.approx(2 / 3)


def test_chosen_alpha_respects_the_accuracy_budget():
    from studio.steering.sweep import Sweep, chosen_alpha

    def sweep(ratios, accuracy):
        rows = [{"neutral answerable": {"image_ratio": r}} for r in ratios]
        return Sweep([1], [-1.0, 0.0, 1.0, 2.0, 4.0], rows, accuracy)
    assert chosen_alpha(sweep([0.0, 0.1, 0.5, 0.85, 0.9], [1, 1, 1, 0.97, 0.9])) == 2.0
    assert chosen_alpha(sweep([0.0, 0.1, 0.5, 0.7, 0.9], [1, 1, 1, 0.97, 0.9])) == 2.0
    assert chosen_alpha(sweep([0.0, 0.1, 0.5, 0.7, 0.9], [1, 1, 0.5, 0.5, 0.5])) is None


def test_steer_and_clamp_probes_match_the_baseline_at_zero_and_refuse_other_models(embedded, untrained_world):
    import vlm_studio as vs
    image = render(sample_scene(9, "neutral"))
    plain = vs.steer(embedded, image, "describe the image .", alpha=0.0, max_new_tokens=10)
    assert plain.answer_ids.tolist() == plain.baseline_ids.tolist() and plain.text == plain.baseline_text
    steered = vs.steer(embedded, image, "describe the image .", alpha=6.0, max_new_tokens=10)
    assert steered.answer_ids.tolist() != steered.baseline_ids.tolist()
    assert steered.baseline_ids.tolist() == plain.baseline_ids.tolist()
    for call in (lambda: vs.steer(untrained_world, image, "what color is the circle ?", alpha=1.0),
                 lambda: vs.clamp(untrained_world, image, "what color is the circle ?", feature=1, value=2.0)):
        with pytest.raises(InputError, match="another model|this model needs|residual stream is"):
            call()
    with pytest.raises(InputError, match="alpha must be between"):
        vs.steer(embedded, image, "describe the image .", alpha=1e6)


def test_text_positions_are_those_after_the_image(embedded):
    from studio.steering.vectors import text_mask
    images = [render(sample_scene(i, "neutral")) for i in range(2)]
    inputs = embedded.batch_inputs(images, ["describe the image .", "the circle is red . what color is the circle ?"])
    ids, mask = inputs["input_ids"], text_mask(embedded, inputs["input_ids"])
    image = ids == embedded.adapter.image_token_id()
    for row in range(2):
        last = int(image[row].nonzero().max())
        assert not mask[row, :last + 1].any() and mask[row, last + 1:].all()
    assert mask[0].sum() < mask[1].sum()


def test_text_position_steering_leaves_the_image_positions_alone(embedded):
    prepared = embedded.prepare(render(sample_scene(3, "neutral")), "the circle is red . what color is the circle ?")
    ids = prepared.inputs["input_ids"]
    last_image = int((ids[0] == embedded.adapter.image_token_id()).nonzero().max())
    plain = embedded.forward(prepared).logits
    steered = {}
    for positions in ("text", "prompt", "all"):
        setting = Steering(_directions(embedded), (1,), 3.0, positions)
        steered[positions] = embedded.forward(prepared, interventions=setting.interventions()).logits
        before = (steered[positions][:last_image + 1] - plain[:last_image + 1]).abs().max()
        assert (before == 0) == (positions != "all"), positions
        assert (steered[positions][last_image + 1:] - plain[last_image + 1:]).abs().max() > 1e-2
    assert torch.equal(steered["text"], steered["prompt"]), "the two differ only at generated steps"
    zero = Steering(_directions(embedded), (1,), 0.0, "text")
    assert [t.id for t in embedded.generate(prepared, 4, interventions=zero.interventions()).tokens] == \
        [t.id for t in embedded.generate(prepared, 4).tokens]


def test_a_trained_vector_moves_held_out_conflicts_toward_the_image(embedded, tmp_path):
    from studio.steering.preference import (
        answer_items,
        held_out_items,
        preference,
        training_items,
    )
    from studio.steering.train import VectorConfig, train_vector
    grads = [p.requires_grad for p in embedded.model.parameters()]
    embedded.answer_batch([render(sample_scene(0, "neutral"))], ["describe the image ."], 2)
    before = hook_count(embedded.model)  # after a first forward: transformers adds its own hooks lazily
    vectors = train_vector(embedded, training_items(100), [1], VectorConfig(steps=16, batch=25), progress=False)
    assert [p.requires_grad for p in embedded.model.parameters()] == grads
    assert hook_count(embedded.model) == before
    assert vectors[1].norm() > 0 and not vectors[[0, 2, 3]].any()
    conflict, _ = held_out_items(60)
    neutral = conflict[:60]
    fit = DirectionFit(vectors, [0.5] * embedded.n_layers, 1, 1, vectors=vectors, positions="text")
    ratio = {a: preference(neutral, answer_items(embedded, neutral, fit.steering([1], a)))["all"].image_ratio
             for a in (0.0, 1.0)}
    assert ratio[1.0] >= ratio[0.0] + 0.2, ratio
    fit.save(tmp_path)
    loaded = DirectionFit.load(tmp_path, embedded)
    assert loaded.method == "trained" and loaded.positions == "text" and torch.equal(loaded.vectors, vectors)
    with pytest.raises(InputError, match="only at layers"):
        loaded.steering([2], 1.0)
    with pytest.raises(InputError, match="positions"):
        VectorConfig(positions="image")
