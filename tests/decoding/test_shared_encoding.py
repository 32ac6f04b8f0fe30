"""Contrastive rows that see their experts' pixels (SID, ICD) have the image encoded once: the
vision tower runs over half the rows, every row's logits equal those of encoding every row, and
rows whose pixels differ (VCD) are still encoded apart."""
import functools

import pytest
import torch

from studio.decoding import strategy_by_name
from studio.engine import session as session_module
from studio.engine.features import images_encoded_once
from tiny_models import sample_image


@pytest.fixture
def encodings(family):
    """Counts the model's image encodings: the first dimension of each ``pixel_values`` encoded."""
    owner = type(family[0].model.base_model)
    original = owner.get_image_features
    seen: list[int] = []

    @functools.wraps(original)
    def counting(self, *args, **kwargs):
        seen.append((kwargs["pixel_values"] if "pixel_values" in kwargs else args[0]).shape[0])
        return original(self, *args, **kwargs)
    owner.get_image_features = counting
    yield seen
    owner.get_image_features = original


def every_row_encoded(monkeypatch) -> None:
    monkeypatch.setattr(session_module, "images_encoded_once", lambda model, inputs: inputs)


def decode_logits(session, batch, strategy) -> torch.Tensor:
    out, _ = session._decode(batch, strategy, 3, (), output_logits=True)
    return torch.stack(out.logits)  # [steps, rows, vocabulary]


@pytest.mark.parametrize("method", ["sid", "icd"])
def test_amateurs_seeing_the_experts_pixels_share_one_encoding(family, encodings, monkeypatch, method):
    session, prepared = family
    strategy = strategy_by_name(method)
    shared = session.generate(prepared, 4, strategy)
    once = list(encodings)
    encodings.clear()
    with monkeypatch.context() as patch:
        every_row_encoded(patch)
        apart = session.generate(prepared, 4, strategy)
    assert len(once) == 1 and len(encodings) == 1 and 2 * once[0] == encodings[0], "half the pixels encoded"
    assert [t.id for t in shared.tokens] == [t.id for t in apart.tokens]
    for key in ("expert", "amateur"):
        for a, b in zip(shared.trace[key], apart.trace[key], strict=True):
            assert torch.allclose(a, b, atol=1e-5)


def test_two_requests_each_amateur_gets_its_own_experts_image(family, encodings, monkeypatch):
    session, _ = family
    strategy = strategy_by_name("icd")
    batch = strategy.rows(session, [sample_image(32, 32, seed=1), sample_image(32, 32, seed=2)],
                          ["what is this ?", "what is here ?"])
    shared = decode_logits(session, batch, strategy)
    with monkeypatch.context() as patch:
        every_row_encoded(patch)
        apart = decode_logits(session, batch, strategy)
    assert encodings[0] * 2 == encodings[1]
    assert torch.allclose(shared, apart, atol=1e-5), "rows 2 and 3 see the images of rows 0 and 1, in order"


def test_rows_whose_pixels_differ_are_encoded_apart(family, encodings):
    session, prepared = family
    session.generate(prepared, 2, strategy_by_name("vcd"))
    batch = strategy_by_name("vcd").batch(session, prepared)
    assert encodings == [batch.inputs["pixel_values"].shape[0]]
    assert images_encoded_once(session.model, batch.inputs) is batch.inputs
    assert images_encoded_once(session.model, prepared.inputs) is prepared.inputs, "one row: nothing to share"
