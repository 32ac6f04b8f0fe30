"""Hand checks of attention shares, rollout and attribution on the small world model."""
import numpy as np
import pytest
import torch

from probes import ProbeRequest, run_probe
from probes.attention import rollout_rows
from probes.attribution import _Target
from probes.runs import get_run
from studio.engine.errors import InputError
from studio.world.render import render
from studio.world.scenes import sample_scene


@pytest.fixture(scope="module")
def request_(untrained_world):
    return ProbeRequest(render(sample_scene(7, "neutral")), "describe the image .", max_new_tokens=3)


def test_image_share_matches_a_hand_computation(untrained_world, request_):
    session = untrained_world
    result = run_probe(session, "attention", request_)
    run = get_run(session, request_)
    inputs = session.extend_inputs(run.prepared.inputs, run.token_map.input_ids[run.prepared.length:])
    with session.attention_implementation("eager", text_only=True), torch.inference_mode():
        attentions = session.model(**inputs, output_attentions=True).attentions
    assert session.model.config._attn_implementation == "sdpa"
    for layer, weights in enumerate(attentions):
        rows = weights[0].float()
        assert torch.allclose(rows.sum(-1), torch.ones_like(rows.sum(-1)), atol=1e-5), "rows sum to 1"
        q, img = result.query_positions, result.image_positions
        hand = rows[:, q][:, :, img].sum(-1).numpy()
        assert np.allclose(result.image_share[layer], hand, atol=1e-6)
    assert np.allclose(result.to_image.sum(-1), result.image_share, atol=1e-5)
    assert (result.image_share <= 1 + 1e-6).all()


def test_rollout_matches_numpy():
    a1 = torch.tensor([[1.0, 0, 0], [0.5, 0.5, 0], [0.2, 0.3, 0.5]])
    a2 = torch.tensor([[1.0, 0, 0], [0.9, 0.1, 0], [0.1, 0.1, 0.8]])
    eye = np.eye(3)
    s1, s2 = 0.5 * a1.numpy() + 0.5 * eye, 0.5 * a2.numpy() + 0.5 * eye
    expected = (s2 / s2.sum(1, keepdims=True)) @ (s1 / s1.sum(1, keepdims=True))
    assert np.allclose(rollout_rows([a1, a2], 0.5, [2]).numpy(), expected[[2]])


def test_occluding_nothing_changes_nothing(untrained_world, request_):
    session = untrained_world
    run = get_run(session, request_)
    target = _Target(session, run, 1)
    with torch.no_grad():
        original = target.of_pixels(target.inputs["pixel_values"][None])[0]
    expected = torch.log_softmax(run.answer_logits[1], -1)[run.token_map.input_ids[run.answer_positions[1]]]
    assert torch.allclose(original, expected, atol=1e-5)
    result = run_probe(session, "attribution", request_, answer_index=1, ig_steps=8)
    assert result.occlusion.shape == (64,) and np.isfinite(result.occlusion).all()
    total = result.ig_pixels.sum()
    assert abs(result.ig_pixels_delta) < max(0.05, 0.5 * abs(total)), "IG roughly complete"


def test_probe_errors_are_clear(untrained_world, request_):
    with pytest.raises(InputError, match="out of range"):
        run_probe(untrained_world, "attribution", request_, answer_index=50)
    with pytest.raises(InputError, match="no parameter"):
        run_probe(untrained_world, "logit_lens", request_, colour="red")
    with pytest.raises(InputError, match="unknown probe"):
        run_probe(untrained_world, "telepathy", request_)
    text_only = ProbeRequest(None, "how many objects are there ?", 2)
    with pytest.raises(InputError, match="image"):
        run_probe(untrained_world, "attention", text_only)
    with pytest.raises(InputError, match="out of range"):
        run_probe(untrained_world, "detector", request_, text_layer=40)


def test_occlusion_regions_group_neighbouring_patches(untrained_world, request_):
    from probes.attribution import AttributionParams, occlusion_regions
    run = get_run(untrained_world, request_)
    regions = occlusion_regions(run.token_map, 16)
    cells = {p: run.token_map.image[p] for p in run.token_map.image_positions}
    assert len(set(regions.tolist())) == 16, "an 8x8 grid in 4x4 blocks of 2x2 patches"
    for k, position in enumerate(run.token_map.image_positions):
        cell = cells[position]
        same = [j for j, p in enumerate(run.token_map.image_positions)
                if (cells[p].row // 2, cells[p].col // 2) == (cell.row // 2, cell.col // 2)]
        assert set(regions[same].tolist()) == {int(regions[k])}
    assert occlusion_regions(run.token_map, 0).tolist() == list(range(64))
    grouped = run_probe(untrained_world, "attribution", request_, answer_index=1, ig_steps=2, occlusion_regions=16)
    assert len(set(np.round(grouped.occlusion, 6).tolist())) <= 16
    by_token = run_probe(untrained_world, "attribution", request_, answer_index=1, ig_steps=2, occlusion_regions=0)
    assert len(set(np.round(by_token.occlusion, 6).tolist())) > 16
    assert AttributionParams().forward_passes(576) <= 40 and AttributionParams().forward_passes(4) < 40
