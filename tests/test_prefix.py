"""Questions about one image sharing its prompt prefix (studio.engine.prefix): the same answers as the
plain left-padded batch on every family that allows it, the same next-token logits as each row run
alone, the path never taken where it is not allowed, and the row layout by hand."""
from __future__ import annotations

import pytest
import torch

from studio.benchmarks.answers import AnswerLog
from studio.engine import prefix
from studio.engine.session import ModelSession
from studio.world.render import render
from studio.world.scenes import sample_scene
from tiny_models import FAMILIES, build_tiny, sample_image

IMAGES = [sample_image(40, 24), sample_image(40, 24, seed=1)]  # one size: one prefix length (anyres families)
ROWS = [0, 0, 1, 1, 0]
PROMPTS = ["what is this ?", "is it red ?", "what ?", "what is this thing here ?", "red ?"]


def test_plan_groups_rows_by_image_and_keeps_every_image_token_in_the_prefix():
    a, b = sample_image(40, 24), sample_image(32, 32)
    rows = [[1, 9, 9, 5, 6], [1, 9, 9, 5, 7, 8], [1, 9, 9, 4]]
    plan = prefix.plan_prefix([a, a.copy(), b], rows, image_token=9)  # a copy is the same image
    assert plan == prefix.PrefixPlan(firsts=[0, 2], group=[0, 0, 1], length=3)
    assert prefix.plan_prefix([a, b, sample_image(24, 40)], rows, image_token=9) is None  # nothing shared
    # rows of two images whose prefixes differ in length (anyres): no one length covers both
    assert prefix.plan_prefix([a, a, b, b], [[1, 9, 9, 5], [1, 9, 9, 6], [1, 9, 4], [1, 9, 7]], image_token=9) is None
    assert prefix.plan_prefix([a, a, b], [[1, 9, 5], [1, 5, 9], [1, 9, 4]], image_token=9) is None  # image after the split


def test_rows_are_padded_between_the_prefix_and_their_own_tokens():
    ids, mask = prefix.middle_padded([[1, 2, 3, 4], [1, 2, 5], [1, 2, 6, 7, 8]], 2, pad=0)
    assert ids.tolist() == [[1, 2, 0, 3, 4], [1, 2, 0, 0, 5], [1, 2, 6, 7, 8]]
    assert mask.tolist() == [[1, 1, 0, 1, 1], [1, 1, 0, 0, 1], [1, 1, 1, 1, 1]]


def _answers(session: ModelSession, shares: bool, monkeypatch) -> tuple[list[str], int]:
    taken = []
    real = prefix.decode_with_shared_prefix

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        taken.append(out is not None)
        return out
    monkeypatch.setattr(type(session.adapter), "shares_prefix", shares)
    monkeypatch.setattr("studio.engine.session.decode_with_shared_prefix", spy)
    return session.answer_batch([IMAGES[r] for r in ROWS], PROMPTS, 5), sum(taken)


@pytest.mark.parametrize("family", FAMILIES)
def test_shared_prefix_answers_equal_the_plain_batch(family, monkeypatch):
    session = ModelSession(*build_tiny(family))
    allowed = type(session.adapter).shares_prefix
    plain, taken = _answers(session, False, monkeypatch)
    assert taken == 0
    if not allowed:
        monkeypatch.undo()
        assert _answers(session, False, monkeypatch)[1] == 0
        return
    shared, taken = _answers(session, True, monkeypatch)
    assert taken == 1 and shared == plain


@pytest.mark.parametrize("family", ["embedded", "llava_next", "idefics3", "internvl"])
def test_each_rows_next_token_logits_equal_the_row_run_alone(family, embedded):
    session = embedded if family == "embedded" else ModelSession(*build_tiny(family))
    images = [render(sample_scene(i, "neutral")) for i in (1, 2)] if family == "embedded" else IMAGES
    pictures, prompts = [images[r] for r in ROWS], PROMPTS
    batch = session.batch_inputs(pictures, prompts)
    rows = prefix.unpadded_rows(batch)
    plan = prefix.plan_prefix(pictures, rows, session.adapter.image_token_id())
    assert plan is not None and plan.group == ROWS
    with torch.no_grad():
        cache = prefix.prefix_cache(session.model, session.batch_inputs(
            [pictures[f] for f in plan.firsts], [prompts[f] for f in plan.firsts], padding_side="right"), plan, rows)
        ids, mask = prefix.middle_padded(rows, plan.length, session.tokenizer.pad_token_id)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, plan.length:]
        shared = session.model(input_ids=ids[:, plan.length:], attention_mask=mask, position_ids=positions,
                               cache=cache).logits[:, -1]
        for r, (picture, prompt) in enumerate(zip(pictures, prompts)):
            alone = session.model(**session.batch_inputs([picture], [prompt])).logits[0, -1]
            torch.testing.assert_close(shared[r], alone, rtol=1e-4, atol=1e-5)


def test_a_batch_of_answers_is_written_at_once_and_read_back(tmp_path):
    log = AnswerLog(tmp_path / "a.jsonl", {"m": 1})
    log.extend({"q1": {"answer": "yes"}, "q2": {"answer": "no"}})
    assert {k: r["answer"] for k, r in AnswerLog(tmp_path / "a.jsonl", {"m": 1}).done().items()} == {"q1": "yes", "q2": "no"}
    with pytest.raises(ValueError, match="answer"):
        log.extend({"q3": {"text": "x"}})
