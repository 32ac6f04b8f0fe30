"""Every registered probe runs on every family's tiny model, perturbs nothing, and round-trips."""
import hashlib

import numpy as np
import pytest
import torch

from probes import REGISTRY, ProbeRequest, run_probe
from probes.base import ProbeResult
from probes.runs import get_run
from studio.engine.hooks import hook_count
from studio.engine.session import ModelSession
from tiny_models import FAMILIES, build_tiny, sample_image


def weights_digest(model) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module", params=FAMILIES)
def session(request):
    model, processor = build_tiny(request.param)
    return ModelSession(model, processor)


def test_every_probe_runs_and_leaves_the_model_untouched(session, tmp_path):
    request = ProbeRequest(sample_image(40, 24), "what is this ?", max_new_tokens=4)
    prepared = session.prepare(request.image, request.prompt)
    baseline_tokens = [t.id for t in session.generate(prepared, max_new_tokens=4).tokens]
    baseline_logits = session.forward(prepared).logits
    hooks, digest = hook_count(session.model), weights_digest(session.model)
    attn = session.model.config._attn_implementation
    for name, probe in REGISTRY.items():
        if probe.needs_fit:  # steer and clamp read files fitted to the embedded model: tests/steering, tests/concepts
            continue
        result = run_probe(session, name, request)
        assert isinstance(result, ProbeResult) and result.probe == name
        again = ProbeResult.from_dict(result.to_dict())
        paths = result.save(tmp_path / name)
        loaded = ProbeResult.load(tmp_path / name)
        for field, value in vars(result).items():
            if isinstance(value, np.ndarray):
                same = np.array_equal(getattr(again, field), value, equal_nan=value.dtype.kind == "f")
                assert same and np.array_equal(getattr(loaded, field), value, equal_nan=value.dtype.kind == "f")
        assert all(p.is_file() for p in paths)
    assert hook_count(session.model) == hooks, "no hook left behind"
    assert weights_digest(session.model) == digest, "weights unchanged"
    assert session.model.config._attn_implementation == attn, "attention implementation restored"
    assert [t.id for t in session.generate(prepared, max_new_tokens=4).tokens] == baseline_tokens
    assert torch.equal(session.forward(prepared).logits, baseline_logits)


def test_logit_lens_last_layer_is_the_model_distribution(session):
    request = ProbeRequest(sample_image(32, 32), "what is this ?", max_new_tokens=3)
    result = run_probe(session, "logit_lens", request)
    run = get_run(session, request)
    answer = [run.token_map.input_ids[p] for p in run.answer_positions]
    full = session.forward(run.prepared, extra_ids=answer).logits  # one plain pass over prompt + answer
    probs = torch.softmax(full, dim=-1)
    top = probs.topk(result.top_ids.shape[2], dim=-1)
    assert np.allclose(result.top_probs[-1], top.values.numpy(), atol=1e-5)
    assert np.allclose(result.target_probs[-1], probs[:, torch.from_numpy(result.target_ids)].numpy(), atol=1e-5)
    predicting = [run.predicting_position(i) for i in range(len(run.answer_positions))]
    assert torch.allclose(run.answer_logits, full[predicting], atol=1e-4), "the generation pass is the model's"
    assert run.answer_logits.argmax(-1).tolist() == result.answer_ids, "the answer is the argmax of its scores"
    assert (result.answer_ranks[-1] == 0).all()


def test_the_generation_pass_states_equal_a_plain_pass_over_prompt_and_answer(session):
    request = ProbeRequest(sample_image(40, 24), "what is this ?", max_new_tokens=5)
    run = get_run(session, request)
    answer = [run.token_map.input_ids[p] for p in run.answer_positions]
    plain = session.forward(run.prepared, capture=True, extra_ids=answer).hidden
    assert plain.shape == run.hidden.shape
    scale = plain.abs().amax().item()
    assert (run.hidden - plain).abs().amax().item() <= 1e-4 * max(1.0, scale), "read, not recomputed differently"


def test_attention_rebuilt_from_the_generation_pass_equals_an_eager_pass(session):
    """The attention probe rebuilds each layer's weights from the queries and keys the sdpa
    generation pass attended with; they equal the eager kernel's weights on a plain pass over
    prompt + answer (every row, so rollout too), and the model runs its own kernel again after."""
    request = ProbeRequest(sample_image(40, 24), "what is this ?", max_new_tokens=4)
    result = run_probe(session, "attention", request)
    run = get_run(session, request)
    inputs = session.extend_inputs(run.prepared.inputs, run.token_map.input_ids[run.prepared.length:])
    attn = session.model.config.text_config._attn_implementation
    with session.attention_implementation("eager", text_only=True), torch.inference_mode():
        eager = session.model(**inputs, output_attentions=True).attentions
    assert session.model.config.text_config._attn_implementation == attn
    language = eager[-session.n_layers:]  # families that report the vision tower's too list it first
    for layer, weights in enumerate(language):
        rebuilt = run.attention_layer(layer).weights()
        assert torch.allclose(rebuilt, weights[0].float(), atol=2e-5), f"layer {layer}"
    q, img = result.query_positions, result.image_positions
    expected_rows = torch.stack([w[0].float()[:, q][:, :, img] for w in language])
    assert np.allclose(result.to_image, expected_rows.numpy(), atol=2e-5)
    joint = None
    for weights in language:
        step = 0.5 * weights[0].float().mean(0) + 0.5 * torch.eye(weights.shape[-1])
        step = step / step.sum(-1, keepdim=True)
        joint = step if joint is None else step @ joint
    assert np.allclose(result.rollout, joint[q][:, img].numpy(), atol=2e-5)


def test_drift_equals_cosines_of_plain_passes(session):
    """Drift reads the image run's states from the generation pass and the blanked / removed
    runs from passes that project only their last position; the cosines equal those of plain
    full passes (the unoptimised computation)."""
    from PIL import Image

    from probes.drift import BLANK_GREY
    request = ProbeRequest(sample_image(40, 24), "what is this ?", max_new_tokens=3)
    result = run_probe(session, "drift", request)
    prepared = session.prepare(request.image, request.prompt)
    with_image = session.forward(prepared, capture=True).hidden[:, -1].float()
    blank = session.prepare(Image.new("RGB", prepared.image.size, BLANK_GREY), request.prompt)
    cos = torch.nn.functional.cosine_similarity
    expected = cos(with_image, session.forward(blank, capture=True).hidden[:, -1].float(), dim=-1)
    assert np.allclose(result.cos_blank, expected.numpy(), atol=1e-5)
    if session.requires_image:
        assert np.isnan(result.cos_removed).all()
    else:
        removed = session.forward(session.prepare(None, request.prompt), capture=True).hidden[:, -1].float()
        assert np.allclose(result.cos_removed, cos(with_image, removed, dim=-1).numpy(), atol=1e-5)
