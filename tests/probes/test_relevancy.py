"""Relevancy maps (Chefer et al. 2021 as in LVLM-Interpret) checked by hand: gradient-weighted
attention from attention weights captured independently (``output_attentions`` with the
parameters made to require grad), propagated with ``R ← R + Ā R`` in forward order."""
import numpy as np
import pytest
import torch

from probes import ProbeRequest, run_probe
from probes.relevancy import RelevancyParams, relevancy_row
from probes.runs import get_run
from studio.engine.errors import InputError
from studio.engine.hooks import hook_count
from studio.world.render import render
from studio.world.scenes import sample_scene
from tiny_models import untrained_world
from views.relevancy import patch_map


@pytest.fixture(scope="module")
def one_layer():
    return untrained_world(layers=1, seed=5)


@pytest.fixture(scope="module")
def two_layer():
    """Two untrained layers whose logits are scaled up (the final norm's weight x300, which keeps
    every argmax): gradients, and so Ā, are large enough that Ā_2 Ā_1 and the layer order show."""
    session = untrained_world(layers=2, seed=3)
    with torch.no_grad():
        session.model.model.language_model.norm.weight.mul_(300.0)
    return session


def scene_request(seed: int = 7, tokens: int = 3) -> ProbeRequest:
    return ProbeRequest(render(sample_scene(seed, "neutral")), "describe the image .", max_new_tokens=tokens)


def hand_layers(session, request, answer_index: int) -> tuple[list[torch.Tensor], int]:
    """Ā per layer for one generated token, from weights returned by ``output_attentions`` and
    gradients of the token's logit taken with the parameters temporarily requiring grad."""
    run = get_run(session, request)
    inputs = session.extend_inputs(run.prepared.inputs, run.token_map.input_ids[run.prepared.length:])
    query = run.answer_positions[answer_index] - 1
    target = run.token_map.input_ids[run.answer_positions[answer_index]]
    params = list(session.model.parameters())
    try:
        for p in params:
            p.requires_grad_(True)
        with session.attention_implementation("eager", text_only=True), torch.enable_grad():
            out = session.model(**inputs, output_attentions=True)
            attentions = list(out.attentions)
            grads = torch.autograd.grad(out.logits[0, query, target], attentions)
    finally:
        for p in params:
            p.requires_grad_(False)
            p.grad = None
    layers = [(g[0] * a[0].detach()).clamp(min=0).mean(0) for a, g in zip(attentions, grads)]
    return layers, query


def forward_rule(layers: list[torch.Tensor]) -> torch.Tensor:
    """R = I, then R ← R + Ā_l R for each layer in forward order (the full matrix)."""
    relevancy = torch.eye(layers[0].shape[0])
    for mean in layers:
        relevancy = relevancy + mean @ relevancy
    return relevancy


def normalised_row(relevancy: torch.Tensor, query: int) -> tuple[np.ndarray, float]:
    row = relevancy[query].clone()
    row[query] -= 1
    return (row / row.sum()).numpy(), float(row.sum())


def test_one_layer_relevancy_is_the_gradient_weighted_attention_row(one_layer):
    request = scene_request()
    result = run_probe(one_layer, "relevancy", request)
    assert one_layer.n_layers == 1 and result.answer_indices == list(range(len(result.answer_positions)))
    for k in result.answer_indices:
        (mean,), query = hand_layers(one_layer, request, k)
        row = mean[query].numpy()  # one layer: R - I = Ā, so the token's row is Ā[q]
        n = row.shape[0]
        assert result.query_positions[k] == query
        assert np.allclose(result.relevancy[k, :n], row / row.sum(), rtol=1e-4, atol=1e-5)
        assert np.isclose(result.scale[k], row.sum(), rtol=1e-4)
        assert not result.relevancy[k, query + 1:].any(), "nothing after the query (causal)"


def test_the_clamp_and_the_target_matter_on_the_one_layer_model(one_layer):
    """Guards for the test above: the positive part removes real mass, so a probe without the
    clamp (or with another row) would not pass it."""
    request = scene_request()
    result = run_probe(one_layer, "relevancy", request, answer_indices=(1,))
    run = get_run(one_layer, request)
    inputs = one_layer.extend_inputs(run.prepared.inputs, run.token_map.input_ids[run.prepared.length:])
    (mean,), query = hand_layers(one_layer, request, 1)
    params = list(one_layer.model.parameters())
    try:
        for p in params:
            p.requires_grad_(True)
        with one_layer.attention_implementation("eager", text_only=True), torch.enable_grad():
            out = one_layer.model(**inputs, output_attentions=True)
            (grad,) = torch.autograd.grad(out.logits[0, query, run.token_map.input_ids[query + 1]],
                                          [out.attentions[0]])
            unclamped = (grad[0] * out.attentions[0][0].detach()).mean(0)[query]
    finally:
        for p in params:
            p.requires_grad_(False)
    assert (unclamped < -1e-6).any(), "some products are negative, so the clamp changes the map"
    row = result.relevancy[0, : mean.shape[0]]
    assert not np.allclose(row, (unclamped / unclamped.sum()).numpy(), atol=1e-3)
    assert not np.allclose(row, (mean[query - 1] / mean[query - 1].sum()).numpy(), atol=1e-3)


@pytest.mark.parametrize("model", ["two_layer", "embedded"])
def test_layers_follow_r_plus_a_r_in_forward_order(model, request):
    session = request.getfixturevalue(model)
    scene = scene_request(11, tokens=4)
    result = run_probe(session, "relevancy", scene)
    assert session.n_layers == {"two_layer": 2, "embedded": 4}[model] and len(result.answer_indices) >= 3
    order_shows = []
    for k in result.answer_indices:
        layers, query = hand_layers(session, scene, k)
        expected, scale = normalised_row(forward_rule(layers), query)
        n = expected.shape[0]
        assert np.allclose(result.relevancy[k, :n], expected, rtol=1e-4, atol=1e-5)
        assert np.isclose(result.scale[k], scale, rtol=1e-4)
        reversed_order, _ = normalised_row(forward_rule(layers[::-1]), query)
        order_shows.append(np.abs(reversed_order - expected).max())
    assert min(order_shows) > 1e-4 and max(order_shows) > 1e-3, "the layer order is visible: the test can tell"


def test_the_row_vector_equals_the_matrix_rule():
    generator = torch.Generator().manual_seed(0)
    layers = [torch.rand(6, 6, generator=generator).tril() for _ in range(3)]
    full = forward_rule(layers)
    for query in range(6):
        assert torch.allclose(relevancy_row(layers, query), full[query], atol=1e-6)


def test_the_image_part_is_the_patch_grid_and_the_model_is_left_as_it_was(embedded):
    request = ProbeRequest(render(sample_scene(3, "cooccur")), "describe the image .", max_new_tokens=12)
    prepared = embedded.prepare(request.image, request.prompt)
    baseline = embedded.forward(prepared).logits
    hooks, attn = hook_count(embedded.model), embedded.model.config._attn_implementation
    grad_mode = torch.is_grad_enabled()
    result = run_probe(embedded, "relevancy", request, max_tokens=4)
    assert result.answer_indices == [0, 1, 2, 3] and result.relevancy.shape == (4, len(result.tokens))
    grid = result.grids[result.main_grid]
    for k in range(4):
        cells = patch_map(result, k)
        assert cells.shape == (grid["rows"], grid["cols"]) == (8, 8) and np.isfinite(cells).all()
        for position in result.image_positions:
            _, row, col = result.patch[position]
            assert cells[row, col] == result.relevancy[k, position]
    assert np.allclose(result.relevancy.sum(1), 1, atol=1e-5) and (result.relevancy >= 0).all()
    assert all(not p.requires_grad and p.grad is None for p in embedded.model.parameters())
    assert hook_count(embedded.model) == hooks and embedded.model.config._attn_implementation == attn
    assert torch.is_grad_enabled() == grad_mode
    assert torch.equal(embedded.forward(prepared).logits, baseline)


def test_explaining_some_tokens_gives_their_rows_of_the_full_run(embedded):
    request = ProbeRequest(render(sample_scene(4, "neutral")), "describe the image .", max_new_tokens=8)
    full = run_probe(embedded, "relevancy", request)
    last = full.answer_indices[-1]
    assert last >= 3, "the answer is long enough to leave tokens out"
    some = run_probe(embedded, "relevancy", request, answer_indices=(last - 1, 1))
    assert some.answer_indices == [1, last - 1]
    assert np.allclose(some.relevancy, full.relevancy[[1, last - 1]], atol=1e-5)
    assert np.allclose(some.scale, full.scale[[1, last - 1]], rtol=1e-4)


def test_parameters_and_cost_are_checked():
    assert RelevancyParams().chosen(40) == list(range(16)) and RelevancyParams().chosen(5) == list(range(5))
    assert RelevancyParams(max_tokens=3).forward_passes(40) == 7
    with pytest.raises(InputError, match="out of range"):
        RelevancyParams(answer_indices=(2, 9)).chosen(5)
    with pytest.raises(InputError, match="max_tokens"):
        RelevancyParams(max_tokens=0)
    with pytest.raises(InputError, match="answer_indices"):
        RelevancyParams(answer_indices=(-1,))


def test_a_prompt_without_an_image_is_refused(untrained_world):
    with pytest.raises(InputError, match="image"):
        run_probe(untrained_world, "relevancy", ProbeRequest(None, "how many objects are there ?", 2))


def test_the_grounding_study_counts_mentions_and_boxes(embedded):
    from studio.world.relevancy_eval import scene_records, summarise
    scene = sample_scene(50_000, "cooccur")
    records = scene_records(embedded, scene)
    kinds = {o.kind for o in scene.objects}
    assert records and all(r["word"] in kinds for r in records), "only real object words are mentions"
    assert all(0 < r["chance"] < 0.5 for r in records), "an object covers a few of the 64 patches"
    made = [[{"relevancy": True, "rollout": False, "chance": 0.1}] * 3,
            [{"relevancy": False, "rollout": False, "chance": 0.3}]]
    report = summarise("made", made, n_boot=200)
    assert report.n_mentions == 4 and report.share == {"relevancy": 0.75, "rollout": 0.0}
    assert np.isclose(report.relevancy_minus_rollout, 0.75) and np.isclose(report.chance, 0.15)
    assert report.ci["relevancy"][0] <= 0.75 <= report.ci["relevancy"][1]
