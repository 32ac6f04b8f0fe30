"""One encoding per pixel tensor within a block: the same outputs, the vision tower run once,
pixels that need gradients always encoded, and the method restored after."""
import pytest
import torch

from studio.engine.session import ModelSession
from tiny_models import FAMILIES, build_tiny, sample_image


@pytest.fixture(scope="module", params=FAMILIES)
def session(request):
    model, processor = build_tiny(request.param)
    return ModelSession(model, processor)


def test_an_image_seen_again_is_not_encoded_again(session):
    inputs = session.prepare(sample_image(40, 24), "what is this ?").inputs
    encoded: list[int] = []
    inner = session.model.model
    original = type(inner).get_image_features

    def counting(self, *args, **kwargs):
        encoded.append(1)
        return original(self, *args, **kwargs)
    type(inner).get_image_features = counting
    try:
        plain = [session.call(lambda: session.model(**inputs).logits) for _ in range(2)]
        assert len(encoded) == 2
        encoded.clear()
        other = {**inputs, "input_ids": inputs["input_ids"].clone()}
        reused = session.call(lambda: [session.model(**inputs).logits, session.model(**other).logits],
                              reuse_image_features=True)
        assert len(encoded) == 1, "the second pass took the first's features"
        encoded.clear()
        pixels = inputs["pixel_values"].float().clone().requires_grad_()

        def with_gradient():
            for _ in range(2):
                session.model(**{**inputs, "pixel_values": pixels.to(inputs["pixel_values"].dtype)})
        session.call(with_gradient, grad=True, reuse_image_features=True)
        assert len(encoded) == 2, "new pixel tensors are encoded each time"
    finally:
        type(inner).get_image_features = original
    assert all(torch.equal(r, plain[0]) for r in reused)
    assert "get_image_features" not in inner.__dict__ and "get_image_features" not in session.model.__dict__
