"""Activations recomputed in the backward pass: the same gradient, the chosen layers really
re-run (the vision tower's, or every layer; a tower that encodes its rows apart, one row at a
time), every flag restored (on success and on error)."""
import pytest
import torch

from studio.engine.recompute import checkpointable_layers
from studio.engine.session import ModelSession
from tiny_models import FAMILIES, build_tiny, sample_image


@pytest.fixture(scope="module", params=["qwen2_vl", "idefics3", "llava"])
def session(request):
    model, processor = build_tiny(request.param)
    return ModelSession(model, processor)


def _pixel_gradient(session, inputs, recompute) -> torch.Tensor:
    def step():
        pixels = inputs["pixel_values"].float().clone().requires_grad_()
        logits = session.model(**{**inputs, "pixel_values": pixels}, logits_to_keep=1, use_cache=False).logits[0, -1]
        torch.log_softmax(logits.float(), -1)[3].backward()
        return pixels.grad
    return session.call(step, grad=True, recompute=recompute)


@pytest.mark.parametrize("recompute,decoder_runs", [("vision", 1), ("all", 2)])
def test_recomputed_layers_give_the_same_gradient_and_re_run(session, recompute, decoder_runs):
    inputs = session.prepare(sample_image(40, 24), "what is this ?").inputs
    layers = checkpointable_layers(session.model, session.adapter.decoder_layers())
    # a row encoder of several rows runs each in the forward, replays it, then replays its layers
    rows = 1 if session.adapter.view_encoder() is None else _rows(session, inputs)
    runs = 2 if rows == 1 else 3 * rows
    assert layers and not {id(m) for m in layers} & {id(m) for m in session.adapter.decoder_layers()}
    counts = {"vision": 0, "decoder": 0}

    def counter(name):
        def hook(module, args):
            counts[name] += 1
        return hook
    inner = [next(m for m in layer.modules() if isinstance(m, torch.nn.Linear))  # a replay calls forward, not hooks
             for layer in (layers[0], session.adapter.decoder_layers()[0])]
    handles = [inner[0].register_forward_pre_hook(counter("vision")),
               inner[1].register_forward_pre_hook(counter("decoder"))]
    try:
        kept = _pixel_gradient(session, inputs, None)
        assert counts == {"vision": 1, "decoder": 1}
        again = _pixel_gradient(session, inputs, recompute)
        assert counts == {"vision": 1 + runs, "decoder": 1 + decoder_runs}, "the chosen layers ran again"
    finally:
        for handle in handles:
            handle.remove()
    assert kept.abs().sum() > 0
    assert torch.allclose(again, kept, rtol=1e-5, atol=1e-8)
    every = checkpointable_layers(session.model)
    assert all(not m.training and not m.gradient_checkpointing for m in every), "flags restored"


def test_flags_are_restored_when_the_call_fails(session):
    layers = checkpointable_layers(session.model, session.adapter.decoder_layers())
    encoder = session.adapter.view_encoder()

    def broken():
        assert all(m.training and m.gradient_checkpointing for m in layers)
        assert not any(c.training for m in layers for c in m.children()), "children stay in eval mode"
        assert encoder is None or "forward" in encoder.__dict__, "a row encoder runs row by row"
        raise RuntimeError("stop")
    with pytest.raises(RuntimeError, match="stop"):
        session.call(broken, grad=True, recompute="vision")
    assert all(not m.training and not m.gradient_checkpointing for m in layers)
    assert all("_gradient_checkpointing_func" not in m.__dict__ for m in layers)
    assert encoder is None or "forward" not in encoder.__dict__


def _rows(session, inputs) -> int:
    seen = []
    handle = session.adapter.view_encoder().register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs.get("pixel_values", args[0] if args else None).shape[0]),
        with_kwargs=True)
    try:
        session.call(lambda: session.model(**inputs))
    finally:
        handle.remove()
    return seen[0]


ROW_ENCODED = {"llava", "llava_next", "idefics3", "smolvlm", "gemma3", "paligemma", "llava_onevision", "internvl"}


@pytest.mark.parametrize("family", FAMILIES)
def test_a_tower_encoding_rows_apart_gives_each_row_alone_the_same_gradient(family):
    session = ModelSession(*build_tiny(family))
    inputs = session.prepare(sample_image(40, 24), "what is this ?").inputs
    encoder = session.adapter.view_encoder()
    assert (encoder is not None) == (family in ROW_ENCODED)
    tower = encoder or checkpointable_layers(session.model, session.adapter.decoder_layers())[0]
    first = next(m for m in tower.modules() if isinstance(m, torch.nn.Linear))
    batches: list[int] = []
    handle = first.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    try:
        kept = _pixel_gradient(session, inputs, None)
        whole = list(batches)
        batches.clear()
        again = _pixel_gradient(session, inputs, "all")
    finally:
        handle.remove()
    assert torch.allclose(again, kept, rtol=1e-5, atol=1e-8)
    assert kept.abs().sum() > 0
    if encoder is not None:
        runs = 3 * whole[0] if whole[0] > 1 else 2  # one row: its layers replayed, as any tower's
        assert batches == [1] * runs, "each row alone: forward, replay, its layers' replay"
    assert not any("forward" in m.__dict__ for m in session.model.modules()), "the encoder's forward restored"


def test_each_row_hands_its_freed_heap_back_after_its_forward_and_its_backward(monkeypatch):
    import studio.engine.recompute as recompute
    session = ModelSession(*build_tiny("idefics3"))
    inputs = session.prepare(sample_image(40, 24), "what is this ?").inputs
    rows = _rows(session, inputs)
    released: list[int] = []
    monkeypatch.setattr(recompute, "release_heap", lambda: released.append(1))
    _pixel_gradient(session, inputs, "all")
    assert rows > 1 and len(released) == 2 * rows
