"""Vision activations recomputed in the backward pass: the same gradient, the layers really
re-run, every flag restored (on success and on error), and the decoder left alone."""
import pytest
import torch

from studio.engine.recompute import checkpointable_layers
from studio.engine.session import ModelSession
from tiny_models import build_tiny, sample_image


@pytest.fixture(scope="module", params=["qwen2_vl", "idefics3", "llava"])
def session(request):
    model, processor = build_tiny(request.param)
    return ModelSession(model, processor)


def _pixel_gradient(session, inputs, recompute: bool) -> torch.Tensor:
    def step():
        pixels = inputs["pixel_values"].float().clone().requires_grad_()
        logits = session.model(**{**inputs, "pixel_values": pixels}, logits_to_keep=1).logits[0, -1]
        torch.log_softmax(logits.float(), -1)[3].backward()
        return pixels.grad
    return session.call(step, grad=True, recompute_vision=recompute)


def test_recomputed_vision_gives_the_same_gradient_and_re_runs_the_layers(session):
    inputs = session.prepare(sample_image(40, 24), "what is this ?").inputs
    layers = checkpointable_layers(session.model, session.adapter.decoder_layers())
    assert layers and not {id(m) for m in layers} & {id(m) for m in session.adapter.decoder_layers()}
    calls: list[str] = []
    inner = next(m for m in layers[0].modules() if isinstance(m, torch.nn.Linear))  # the replay calls forward, not hooks
    handle = inner.register_forward_pre_hook(lambda m, a: calls.append("vision"))
    decoder_calls: list[str] = []
    decoder = session.adapter.decoder_layers()[0].register_forward_pre_hook(lambda m, a: decoder_calls.append("d"))
    try:
        kept = _pixel_gradient(session, inputs, recompute=False)
        assert (len(calls), len(decoder_calls)) == (1, 1)
        again = _pixel_gradient(session, inputs, recompute=True)
        assert len(calls) == 1 + 2, "the vision layer ran again in the backward pass"
        assert len(decoder_calls) == 2, "the decoder is not recomputed"
    finally:
        handle.remove()
        decoder.remove()
    assert kept.abs().sum() > 0
    assert torch.allclose(again, kept, rtol=1e-5, atol=1e-8)
    assert all(not m.training and not m.gradient_checkpointing for m in layers), "flags restored"


def test_flags_are_restored_when_the_call_fails(session):
    layers = checkpointable_layers(session.model, session.adapter.decoder_layers())

    def broken():
        assert all(m.training and m.gradient_checkpointing for m in layers)
        assert not any(c.training for m in layers for c in m.children()), "children stay in eval mode"
        raise RuntimeError("stop")
    with pytest.raises(RuntimeError, match="stop"):
        session.call(broken, grad=True, recompute_vision=True)
    assert all(not m.training and not m.gradient_checkpointing for m in layers)
    assert all("_gradient_checkpointing_func" not in m.__dict__ for m in layers)
