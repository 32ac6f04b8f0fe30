"""The implicit-multimodal-alignment probe: the score on planted states, the probe against an
independent capture, refusals, and the study's bootstrap on planted correlations."""
import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from probes import ProbeRequest, run_probe
from probes.alignment import alignment_scores, text_positions
from probes.runs import get_run
from studio.engine.errors import InputError
from studio.world.alignment_eval import bootstrap_correlation, correlate, partial_spearman
from studio.world.samples import load_samples
from views.registry import figures


def planted_states() -> torch.Tensor:
    """[3 layers, 6 positions, 4 dims]: image at 0-1, text at 3-4, junk at 2 and 5 (never pooled)."""
    e = torch.eye(4)
    hidden = torch.full((3, 6, 4), 100.0)
    hidden[0, 0], hidden[0, 1], hidden[0, 3], hidden[0, 4] = e[0], 2 * e[0], 5 * e[0], 3 * e[0]  # same direction
    hidden[1, 0], hidden[1, 1], hidden[1, 3], hidden[1, 4] = e[0], e[0], e[1], 2 * e[1]  # orthogonal
    hidden[2, 0], hidden[2, 1], hidden[2, 3], hidden[2, 4] = e[0], e[1], e[0], e[0]  # pooled before the cosine
    return hidden


def test_score_on_planted_states_equals_the_hand_computation():
    score = alignment_scores(planted_states(), [0, 1], [3, 4])
    # layer 2: the image mean is (0.5, 0.5), the text mean (1, 0): cosine 1/sqrt(2), where the
    # mean of token-pair cosines would be 0.5
    assert np.allclose(score, [1.0, 0.0, 1 / math.sqrt(2)], atol=1e-6)
    assert score.dtype == np.float32 and score.shape == (3,)
    held = alignment_scores(planted_states(), [0, 1], [3, 4], image_layer=0)  # image mean e0 at every layer
    assert np.allclose(held, [1.0, 0.0, 1.0], atol=1e-6)
    assert np.allclose(alignment_scores(-planted_states(), [0, 1], [3, 4]), score, atol=1e-6)
    flipped = planted_states()
    flipped[1, 3:5] = -flipped[1, 0:2]
    assert alignment_scores(flipped, [0, 1], [3, 4])[1] == pytest.approx(-1.0, abs=1e-6)


def test_text_positions_follow_the_reference_choices():
    images = [2, 3, 4, 5]
    assert text_positions(images, 12, 9, "after_image") == [6, 7, 8, 9, 10, 11]
    assert text_positions(images, 12, 9, "prompt") == [6, 7, 8]
    assert text_positions(images, 12, 9, "all") == [0, 1, 6, 7, 8, 9, 10, 11]


def test_probe_equals_the_score_from_an_independent_capture(embedded):
    request = ProbeRequest(load_samples()[1].path, "describe the image .", max_new_tokens=16)
    prepared = embedded.prepare(request.image, request.prompt)
    before = embedded.forward(prepared).logits
    result = run_probe(embedded, "alignment", request)
    run = get_run(embedded, request)
    answer = [run.token_map.input_ids[p] for p in run.answer_positions]
    hidden = embedded.forward(run.prepared, capture=True, extra_ids=answer).hidden.double().numpy()
    ids = run.prepared.inputs["input_ids"][0]
    images = (ids == embedded.adapter.image_token_id()).nonzero().flatten().numpy()
    texts = np.arange(images.max() + 1, hidden.shape[1])
    image, text = hidden[:, images].mean(1), hidden[:, texts].mean(1)
    expected = (image * text).sum(-1) / (np.linalg.norm(image, axis=-1) * np.linalg.norm(text, axis=-1))
    assert result.score.shape == (embedded.n_layers,) and len(answer) > 3
    assert np.allclose(result.score, expected, atol=1e-4)
    assert result.text_positions.tolist() == texts.tolist() and result.n_image == len(images) == 64
    prompt_only = run_probe(embedded, "alignment", request, text="prompt")
    assert prompt_only.text_positions.tolist() == list(range(images.max() + 1, run.prepared.length))
    assert not np.allclose(prompt_only.score, result.score, atol=1e-4), "the answer's states are pooled by default"
    assert torch.equal(embedded.forward(prepared).logits, before), "the probe perturbs nothing"
    curve = figures(result)["curve"]
    assert list(curve.data[0].y) == pytest.approx(result.score.tolist()) and list(curve.data[0].x) == [0, 1, 2, 3]


def test_bad_input_gets_clear_messages(embedded):
    with pytest.raises(InputError, match="the alignment probe needs an image"):
        run_probe(embedded, "alignment", ProbeRequest(None, "describe the image .", 4))
    request = ProbeRequest(load_samples()[0].path, "describe the image .", 4)
    with pytest.raises(InputError, match="image_layer must be below the model's 4 decoder layers"):
        run_probe(embedded, "alignment", request, image_layer=4)
    with pytest.raises(InputError, match="text must be one of"):
        run_probe(embedded, "alignment", request, text="answer")
    with pytest.raises(InputError, match="image_layer must be None or a non-negative"):
        run_probe(embedded, "alignment", request, image_layer=-1)


def test_bootstrap_interval_covers_a_planted_correlation():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(400)
    y = 0.6 * x + 0.8 * rng.standard_normal(400)  # Pearson 0.6 -> population Spearman (6/pi) asin(0.3)
    truth = 6 / math.pi * math.asin(0.3)
    c = bootstrap_correlation(x, y, n_boot=1000, seed=0)
    assert c.rho == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    assert c.low < truth < c.high and c.low < c.rho < c.high and 0.05 < c.high - c.low < 0.25
    assert c.n == 400 and c.undefined == 0
    negative = bootstrap_correlation(x, -y, n_boot=1000, seed=0)
    assert negative.rho == pytest.approx(-c.rho) and negative.high < -0.4
    null = bootstrap_correlation(x, rng.standard_normal(400), n_boot=1000, seed=0)
    assert null.low < 0 < null.high
    assert bootstrap_correlation(x, y, n_boot=1000, seed=0) == c, "seeded: a run repeats exactly"


def test_partial_correlation_removes_a_planted_confound():
    rng = np.random.default_rng(2)
    z = rng.integers(1, 6, 500).astype(float)  # e.g. the scene's object count
    x, y = z + rng.standard_normal(500), z + rng.standard_normal(500)  # related only through z
    assert bootstrap_correlation(x, y, n_boot=500).low > 0.5
    partial = bootstrap_correlation(x, y, n_boot=500, control=z)
    assert partial.low < 0 < partial.high and abs(partial_spearman(x, y, z)) < 0.1


def test_correlate_reports_each_layer_and_an_undefined_split():
    rng = np.random.default_rng(3)
    scores = rng.standard_normal((60, 3))
    records = [{"score": list(s), "hallucinated": int(s[1] < 0), "mentions": 2, "objects": 2} for s in scores]
    report = correlate("planted", records, n_boot=200)
    assert [round(c.rho, 9) for c in report.per_layer] == [
        round(spearmanr(scores[:, i], [r["hallucinated"] for r in records]).statistic, 9) for i in range(3)]
    assert report.per_layer[1].high < -0.7, "the planted layer is found"
    assert report.hallucinated_per_caption == pytest.approx(np.mean(scores[:, 1] < 0))
    clean = correlate("clean", [{**r, "hallucinated": 0} for r in records], n_boot=50)
    assert math.isnan(clean.layer_mean.rho) and clean.layer_mean.undefined == 50
