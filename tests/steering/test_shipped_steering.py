"""The shipped steering vector, re-measured live on the first 100 held-out items of each kind
(a subset of the model card's 200): toward the image at the fit's chosen alpha, toward the
text (or no further) below 0, and within the accuracy budget on matched items. Thresholds
leave room for the smaller sample; the card has the full numbers."""
import numpy as np
import pytest

from studio.engine.assets import asset
from studio.steering.fit import DirectionFit
from studio.steering.preference import (
    answer_items,
    held_out_items,
    image_answerable,
    preference,
)

ASSETS = asset("steering")


@pytest.fixture(scope="module")
def measured(embedded):
    fit = DirectionFit.load(ASSETS, embedded)
    layers, chosen = fit.extra["layers"], fit.extra["bias_split"]["alpha"]
    conflict, matched = held_out_items(100)
    neutral = conflict[:100]
    seen = image_answerable(embedded, neutral)
    out = {}
    for alpha in (-0.5, 0.0, chosen):
        answers = answer_items(embedded, neutral + matched, fit.steering(layers, alpha))
        counts = preference(neutral, answers[:100], seen)
        accuracy = np.mean([i.follows(a) == "image" for i, a in zip(matched, answers[100:])])
        out[alpha] = (counts["all"].image_ratio, counts["all answerable"].image_ratio, accuracy)
    return fit, chosen, out


def test_the_shipped_vector_is_trained_at_the_prompt_text(measured):
    fit, chosen, _ = measured
    assert fit.method == "trained" and fit.positions == "prompt"
    assert 0 < chosen <= 2


def test_steering_toward_the_image_reaches_the_target_within_the_budget(measured):
    _, chosen, out = measured
    _, seen_0, accuracy_0 = out[0.0]
    everything, seen, accuracy = out[chosen]
    assert seen_0 <= 0.2, "unsteered, the model sides with the text"
    assert seen >= 0.75 and everything >= 0.7, out
    assert accuracy >= accuracy_0 - 0.07, out


def test_negative_alpha_does_not_move_toward_the_image(measured):
    _, chosen, out = measured
    assert out[-0.5][1] <= out[0.0][1] + 0.03 < out[chosen][1], out
