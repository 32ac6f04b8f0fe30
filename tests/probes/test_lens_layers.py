"""Which layers the logit lens decodes everywhere: all of them when they are affordable, else an
even subset with the first and the last, each decoded row equal to the full sweep's row; the
detector maxes over the same layers, from the lens's memo or decoding them itself."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from probes import ProbeRequest, run_probe
from probes import logit_lens as lens
from probes.runs import cache_for, get_run
from studio.engine.session import ModelSession
from tiny_models import build_tiny, sample_image


@pytest.fixture(scope="module")
def session() -> ModelSession:
    return ModelSession(*build_tiny("llava"))


def _budget_for(session: ModelSession, layers: int) -> float:
    """The SWEEP_BUDGET that affords exactly ``layers`` layers on this model."""
    unembedding = session.adapter.unembedding()
    params = sum(p.numel() for p in session.model.parameters())
    return (layers + 0.5) * unembedding.in_features * unembedding.out_features / params


def test_every_layer_when_affordable_else_an_even_subset_with_first_and_last(session, monkeypatch):
    n = session.n_layers
    assert lens.lens_layers(session, n) == list(range(n))  # a tiny model: the sweep is cheap
    monkeypatch.setattr(lens, "SWEEP_BUDGET", _budget_for(session, 3))
    assert lens.lens_layers(session, 9) == [0, 4, 8]
    assert lens.lens_layers(session, 10) == [0, 4, 9]  # round(4.5) = 4 (banker's), round(9) = 9
    assert lens.lens_layers(session, 10, all_layers=True) == list(range(10))
    monkeypatch.setattr(lens, "SWEEP_BUDGET", 0.0)
    assert lens.lens_layers(session, 7) == [0, 6]  # never fewer than the first and the last


def test_a_subset_holds_the_full_sweeps_rows_and_the_detector_maxes_over_it(embedded, monkeypatch):
    session = embedded  # four layers: two of them decoded
    request = ProbeRequest(sample_image(64, 64), "describe the image .", max_new_tokens=3)
    full = run_probe(session, "logit_lens", request, all_layers=True)
    assert full.layers == list(range(session.n_layers))
    cache_for(session).runs.clear()
    monkeypatch.setattr(lens, "SWEEP_BUDGET", _budget_for(session, 2))
    part = run_probe(session, "logit_lens", request)
    chosen = lens.lens_layers(session, session.n_layers)
    assert part.layers == chosen and len(chosen) < session.n_layers
    for name in ("top_ids", "top_probs", "target_probs"):
        assert np.array_equal(getattr(part, name), getattr(full, name)[chosen]), name
    assert np.array_equal(part.answer_probs, full.answer_probs)  # trajectories: every layer
    assert chosen == [0, session.n_layers - 1] and part.decoded(1) == 0 and part.decoded(session.n_layers - 2) == 1

    run = get_run(session, request)
    image_positions = run.token_map.image_positions
    words = [run.token_map.input_ids[run.answer_positions[0]]]
    by_hand = torch.from_numpy(full.target_probs[chosen][:, image_positions][..., [full.target_index(words[0])]])
    from probes.detector import confidence_maps
    from_memo = confidence_maps(session, run, words, image_positions)
    run.memo.pop("tracked")
    decoded = confidence_maps(session, run, words, image_positions)
    assert torch.allclose(from_memo, by_hand.amax(0).T, atol=1e-6)
    assert torch.allclose(decoded, from_memo, atol=1e-6)
    cache_for(session).runs.clear()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_reused_softmax_buffer_gives_each_chunk_its_own_softmax(dtype):
    """Chunks of different shapes through one buffer (larger, then smaller, then larger again and
    on one more dimension): each result equals ``torch.softmax`` of its own logits in float32,
    logits far beyond exp's range included (the maximum is subtracted first)."""
    generator = torch.Generator().manual_seed(0)
    softmax = lens.Softmax()
    chunks = [torch.randn(6, 50, generator=generator) * 8, torch.randn(2, 50, generator=generator) * 8 + 500,
              torch.randn(3, 4, 50, generator=generator) * 8 - 900]
    for logits in (c.to(dtype) for c in chunks):
        probs = softmax(logits)
        assert probs.dtype == torch.float32 and probs.shape == logits.shape
        torch.testing.assert_close(probs, torch.softmax(logits.float(), dim=-1), rtol=1e-5, atol=1e-7)
    assert softmax.buffer is not None and softmax.buffer.numel() == 600  # grown once, to the largest chunk


def test_words_beyond_the_exp_floor_get_its_probability_and_every_other_word_is_unchanged():
    """Words more than ``-EXP_FLOOR`` below the row's top get ``exp(EXP_FLOOR) / sum`` (torch's
    slow subnormal path avoided); words within it, down to 86 below the top, get exactly the
    unfloored ``exp(x - max) / sum``."""
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 300, generator=generator) * 5  # a spread well within the floor
    logits[:, :100] = logits[:, :100].abs().neg() * 20 - 150  # far below every row's top
    logits[:, 100:110] = logits.amax(-1, keepdim=True) - 86  # just inside the floor
    probs = lens.Softmax()(logits)
    shifted = (logits - logits.amax(-1, keepdim=True)).exp()
    reference = shifted / shifted.sum(-1, keepdim=True)
    assert torch.equal(probs[:, 100:], reference[:, 100:])
    floor = torch.exp(torch.tensor(lens.EXP_FLOOR)) / shifted.sum(-1, keepdim=True)
    assert torch.equal(probs[:, :100], floor.expand(-1, 100))


def test_ranks_count_the_words_scoring_strictly_above_each_chosen_one():
    """Per-layer counting equals the count over all layers at once, ties with the chosen word not
    counted (a word tied with it is not above it)."""
    generator = torch.Generator().manual_seed(2)
    logits = torch.randint(-5, 5, (3, 4, 40), generator=generator).to(torch.bfloat16)
    wanted = torch.randint(0, 40, (3, 4, 1), generator=generator)
    chosen = logits.gather(-1, wanted)
    ranks = lens.ranks_above(logits, chosen)
    assert ranks.dtype == torch.int32
    assert torch.equal(ranks, (logits > chosen).sum(-1).to(torch.int32))
    assert torch.equal(ranks[1, 2], (logits[1, 2] > logits[1, 2, wanted[1, 2, 0]]).sum().to(torch.int32))
