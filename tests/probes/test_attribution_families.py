"""The attribution probe on every family: the same numbers as captum's own classes run the plain
way (every evaluation made, LayerIntegratedGradients for the prompt), with the evaluations it
saves really saved."""
import numpy as np
import pytest
import torch
from captum.attr import FeatureAblation, IntegratedGradients, LayerIntegratedGradients

from probes import ProbeRequest, run_probe
from probes.attribution import PIXEL_BASELINE, _Target, baseline_ids, occlusion_mask, occlusion_regions
from probes.runs import get_run
from studio.engine.session import ModelSession
from tiny_models import FAMILIES, build_tiny, sample_image

STEPS = 3


@pytest.fixture(scope="module", params=FAMILIES)
def session(request):
    model, processor = build_tiny(request.param)
    return ModelSession(model, processor)


def _reference(session, request):
    """Occlusion, pixel and prompt integrated gradients with captum's classes evaluating everything."""
    run = get_run(session, request)
    target = _Target(session, run, 1)
    inputs, pixels = target.inputs, target.inputs["pixel_values"]

    def of_pixels(batch):
        return torch.stack([target._log_prob(pixel_values=p) for p in batch])

    def of_ids(batch):
        return torch.stack([target._log_prob(input_ids=row[None]) for row in batch])
    groups = session.adapter.pixel_token_groups(inputs)
    region = occlusion_regions(run.token_map, 12)
    mask = occlusion_mask(groups, region).expand_as(pixels)
    occlusion = session.call(lambda: FeatureAblation(of_pixels).attribute(
        pixels[None], baselines=PIXEL_BASELINE, feature_mask=mask[None]))
    ig_pixels = session.call(lambda: IntegratedGradients(of_pixels).attribute(
        pixels[None].float().requires_grad_(), baselines=PIXEL_BASELINE, n_steps=STEPS, internal_batch_size=1,
        return_convergence_delta=True), grad=True, recompute="all")
    ids = inputs["input_ids"]
    ig_prompt = session.call(lambda: LayerIntegratedGradients(of_ids, session.adapter.embeddings()).attribute(
        ids, baselines=baseline_ids(session, ids), n_steps=STEPS, internal_batch_size=1,
        return_convergence_delta=True), grad=True, recompute="all", reuse_image_features=True)
    features = torch.unique(mask).numel()
    return occlusion[0], ig_pixels, ig_prompt, groups, features, run.prepared.length


def test_attribution_equals_captum_run_the_plain_way_with_fewer_evaluations(session):
    request = ProbeRequest(sample_image(40, 24), "what is this ?", 3)
    occlusion, (ig_pixels, pixel_delta), (ig_prompt, prompt_delta), groups, features, length = \
        _reference(session, request)
    model, decoder = session.model, session.adapter.decoder_layers()[0]
    calls = {"model": 0, "decoder": 0}

    def count(key):
        def hook(module, args, kwargs=None):
            calls[key] += not torch.is_grad_enabled()
        return hook
    handles = [model.register_forward_pre_hook(count("model")), decoder.register_forward_pre_hook(count("decoder"))]
    try:
        result = run_probe(session, "attribution", request, answer_index=1, ig_steps=STEPS)
    finally:
        for handle in handles:
            handle.remove()
    n = len(result.image_positions)
    from probes.attribution import _per_group
    np.testing.assert_array_equal(result.occlusion, _per_group(occlusion.detach(), groups, n, "mean"))
    np.testing.assert_array_equal(result.ig_pixels, _per_group(ig_pixels[0].detach(), groups, n, "sum"))
    np.testing.assert_array_equal(result.ig_prompt, ig_prompt[0].sum(-1)[:length].detach().float().numpy())
    assert result.ig_pixels_delta == float(pixel_delta.abs().max())
    assert result.ig_prompt_delta == float(prompt_delta.abs().max())
    # without gradients: occlusion's reference and one per region, each baseline once; the unchanged
    # inputs are not evaluated again for the deltas, and the two embedding reads stop before the decoder
    assert calls["decoder"] == features + 3
    assert calls["model"] == features + 3 + 2


@pytest.mark.parametrize("family", FAMILIES)
def test_pixels_equal_in_value_give_the_same_answer_in_bfloat16(family):
    """Why the probe may reuse the unchanged inputs' value when captum hands back its float32
    copy of a bfloat16 model's pixels: every family's tower casts them to its dtype first."""
    model, processor = build_tiny(family)
    session = ModelSession(model.to(torch.bfloat16), processor)
    target = _Target(session, get_run(session, ProbeRequest(sample_image(40, 24), "what is this ?", 3)), 1)
    pixels = target.inputs["pixel_values"]
    assert pixels.dtype == torch.bfloat16
    as_given, as_float = session.call(lambda: (target._log_prob(pixel_values=pixels),
                                               target._log_prob(pixel_values=pixels.float())))
    assert torch.equal(as_given, as_float)
