"""Contrastive methods as published: seeded sampling from the contrast (amateurs follow their
experts), probabilities under the distribution that chose each token, presets, and ICD's
disturbance in the system turn where the template has one."""
import math

import pytest
import torch

from studio.decoding import strategy_by_name
from studio.decoding.contrastive import ContrastiveBatch, ContrastProcessor, contrast
from studio.decoding.icd import DISTURBANCE, SYSTEM_DISTURBANCE
from studio.engine.errors import InputError
from studio.engine.session import ModelSession
from tiny_models import build_tiny, sample_image

CONTRASTIVE = ("vcd", "sid", "icd")


@pytest.fixture(scope="module")
def qwen():
    model, processor = build_tiny("qwen2_vl")
    session = ModelSession(model, processor)
    return session, session.prepare(sample_image(32, 32), "what is this ?")


@pytest.mark.parametrize("name", CONTRASTIVE)
def test_sampling_is_seeded_and_reproducible(qwen, name):
    session, prepared = qwen
    runs = [[t.id for t in session.generate(prepared, 8, strategy_by_name(name, sample=True, sample_seed=seed)).tokens]
            for seed in (3, 3, 4, 5, 6)]
    assert runs[0] == runs[1]
    assert any(r != runs[0] for r in runs[2:])  # a random tiny model spreads its mass: other seeds differ


def test_sampled_token_is_given_to_expert_and_amateur_alike():
    torch.manual_seed(0)
    scores = torch.randn(4, 50)  # two experts, then their two amateurs
    batch = ContrastiveBatch({"input_ids": torch.zeros(4, 3, dtype=torch.long)}, 2)
    processor = ContrastProcessor(batch, 1.0, 0.0, strategy_by_name("vcd", sample=True).sampler())
    out = processor(torch.zeros(4, 3, dtype=torch.long), scores)
    chosen = out.argmax(-1)
    assert chosen[0] == chosen[2] and chosen[1] == chosen[3]
    assert torch.isinf(out).sum() == 4 * 49  # only the drawn token survives in every row
    torch.testing.assert_close(processor.trace["chosen"][0], contrast(scores[:2], scores[2:], 1.0, 0.0)[0])


def test_token_probability_is_under_the_distribution_that_chose_it(qwen):
    session, prepared = qwen
    strategy = strategy_by_name("vcd", alpha=1.0, beta=0.0)
    generation = session.generate(prepared, 4, strategy)
    for i, token in enumerate(generation.tokens):
        mixed = generation.trace["contrast"][i]
        expert = generation.trace["expert"][i]
        assert token.prob == pytest.approx(float(torch.softmax(mixed, -1)[token.id]), rel=1e-5)
        assert token.expert_prob == pytest.approx(float(torch.softmax(expert, -1)[token.id]), rel=1e-5)
    greedy = session.generate(prepared, 4)
    assert all(t.expert_prob is None for t in greedy.tokens)


def test_sampling_probability_includes_the_temperature(qwen):
    session, prepared = qwen
    generation = session.generate(prepared, 3, strategy_by_name("vcd", sample=True, temperature=0.5, beta=0.0))
    for i, token in enumerate(generation.tokens):
        warped = generation.trace["contrast"][i] / 0.5
        assert token.prob == pytest.approx(float(torch.softmax(warped, -1)[token.id]), rel=1e-4)


def test_presets_set_published_values_and_explicit_settings_win():
    assert strategy_by_name("sid", preset="reference-code").alpha == 0.5
    assert strategy_by_name("sid", preset="reference-code").beta == 0.0
    assert strategy_by_name("sid", preset="paper").alpha == 1.0
    assert strategy_by_name("vcd", preset="reference-code").sample_seed == 55
    assert strategy_by_name("vcd", preset="paper").sample is True
    assert strategy_by_name("sid", preset="reference-code", alpha=2.0).alpha == 2.0
    icd = strategy_by_name("icd", preset="reference-code")
    assert (icd.placement, icd.instruction) == ("system", SYSTEM_DISTURBANCE)
    with pytest.raises(InputError, match="no preset 'nope'"):
        strategy_by_name("vcd", preset="nope")


def _recorded_rows(session, monkeypatch, strategy) -> tuple[list, list, ContrastiveBatch]:
    """The prompts and system turns ICD asks the session to batch, and the batch it gets."""
    seen: dict = {}
    real = session.batch_inputs

    def record(images, prompts, systems=None):
        seen.update(prompts=prompts, systems=systems)
        return real(images, prompts, systems)
    monkeypatch.setattr(session, "batch_inputs", record)
    batch = strategy.rows(session, [sample_image(32, 32)], ["what is this ?"])
    return seen["prompts"], seen["systems"], batch


def test_icd_replaces_the_system_turn_where_the_template_has_one(qwen, monkeypatch):
    session, _ = qwen
    assert session.has_system_turn
    prompts, systems, batch = _recorded_rows(session, monkeypatch, strategy_by_name("icd"))
    assert prompts == ["what is this ?"] * 2 and systems == [None, SYSTEM_DISTURBANCE]
    expert, amateur = (session.tokenizer.convert_ids_to_tokens(row) for row in batch.inputs["input_ids"])
    turns = [a for a, b in zip(amateur, amateur[1:]) if a == "<|im_start|>" and b == "system"]
    assert len(turns) == 1 and amateur.count("<|im_start|>") == expert.count("<|im_start|>") + \
        (0 if "system" in expert else 1)  # one system turn: the disturbance, replacing any default


def test_icd_without_a_system_turn_puts_the_paper_text_before_the_question(embedded, monkeypatch):
    assert not embedded.has_system_turn
    prompts, systems, _ = _recorded_rows(embedded, monkeypatch, strategy_by_name("icd"))
    assert prompts == ["what is this ?", f"{DISTURBANCE} what is this ?"] and systems is None
    with pytest.raises(InputError, match="no system turn"):
        strategy_by_name("icd", placement="system").check(embedded)


def test_plausibility_constraint_at_beta_zero_keeps_everything():
    scores = torch.tensor([[2.0, 1.0, -5.0]])
    assert not torch.isinf(contrast(scores, scores * 0, 1.0, 0.0)).any()
    assert math.isinf(float(contrast(scores, scores * 0, 1.0, 0.5)[0, 2]))


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "idefics3"])
def test_vcd_noise_of_an_image_does_not_depend_on_its_batch(family):
    model, processor = build_tiny(family)
    session = ModelSession(model, processor)
    vcd = strategy_by_name("vcd")
    images, prompts = [sample_image(32, 32, seed=s) for s in (1, 2)], ["what is this ?", "and this ?"]
    batch = vcd.rows(session, images, prompts).inputs["pixel_values"]
    alone = [vcd.rows(session, [image], [prompt]).inputs["pixel_values"] for image, prompt in zip(images, prompts)]
    half = batch.shape[0] // 2  # experts then amateurs
    amateur_rows = batch[half:]
    singles = torch.cat([a[a.shape[0] // 2:] for a in alone])
    torch.testing.assert_close(amateur_rows, singles, rtol=0, atol=0)


def test_plain_sampling_probability_is_under_the_warped_distribution(qwen):
    session, prepared = qwen
    generation = session.generate(prepared, 3, strategy_by_name("sampling", temperature=0.5, sample_seed=1))
    out = session.generate(prepared, 3)  # greedy: the model's own distribution, no expert_prob beside it
    assert all(t.expert_prob is None for t in out.tokens)
    for token in generation.tokens:
        assert token.expert_prob is not None and token.prob != pytest.approx(token.expert_prob, abs=1e-6)
