"""Steering and clamping on every family: strength 0 (or a feature clamped to its own value) is
bit-identical to the plain model, a real edit changes the answer's logits, and no hook stays."""
import pytest
import torch

from studio.concepts.explore import Dictionary, clamp_intervention
from studio.engine.hooks import hook_count
from studio.engine.session import ModelSession
from studio.steering.vectors import Steering
from tiny_models import FAMILIES, build_tiny, sample_image


class LinearSAE:
    """A stand-in dictionary with sae-lens's encode/decode surface (ReLU encoder, linear decoder)."""

    def __init__(self, width: int, features: int = 16) -> None:
        generator = torch.Generator().manual_seed(0)
        self.W_enc = torch.randn(width, features, generator=generator) / width ** 0.5
        self.W_dec = torch.randn(features, width, generator=generator) / features ** 0.5
        self.cfg = type("Config", (), {"d_sae": features})()

    def encode(self, h: torch.Tensor) -> torch.Tensor:
        return torch.relu(h @ self.W_enc)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.W_dec


@pytest.fixture(scope="module", params=FAMILIES)
def session(request):
    model, processor = build_tiny(request.param)
    return ModelSession(model, processor)


def test_zero_strength_edits_are_bit_identical_and_leave_nothing(session):
    prepared = session.prepare(sample_image(40, 24), "what is this ?")
    plain_ids = [t.id for t in session.generate(prepared, 4).tokens]
    plain = session.forward(prepared).logits
    hooks = hook_count(session.model)
    width = session.adapter.final_norm().weight.shape[0]
    vectors = torch.randn(session.n_layers, width, generator=torch.Generator().manual_seed(1))
    for positions in ("all", "text", "prompt"):
        zero = Steering(vectors, (0,), 0.0, positions).interventions()
        assert torch.equal(session.forward(prepared, interventions=zero).logits, plain), positions
        assert [t.id for t in session.generate(prepared, 4, interventions=zero).tokens] == plain_ids, positions
    strong = session.forward(prepared, interventions=Steering(vectors * 50, (0,), 1.0).interventions()).logits
    assert (strong - plain).abs().max() > 1e-3
    dictionary = Dictionary(LinearSAE(width), 0, {})
    own = [clamp_intervention(dictionary, 3, None, where) for where in ("image", "all")]
    assert torch.equal(session.forward(prepared, interventions=own).logits, plain)
    clamped = session.forward(prepared, interventions=[clamp_intervention(dictionary, 3, 80.0, "all")]).logits
    assert (clamped - plain).abs().max() > 1e-4
    assert hook_count(session.model) == hooks
