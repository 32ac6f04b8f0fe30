"""The one intervention mechanism: where an edit applies (phase, positions, rows) is what it
states, a read changes nothing, bad specifications are refused, and no hook outlives the call
(success, error or a cancelled generator alike)."""
import pytest
import torch

from studio.engine.attention_reads import QueryKeyLog
from studio.engine.errors import InputError, StudioError
from studio.engine.hooks import hook_count
from studio.interventions import Intervention, position_mask, read
from studio.world.render import render
from studio.world.scenes import sample_scene


@pytest.fixture(scope="module")
def prepared(untrained_world):
    return untrained_world.prepare(render(sample_scene(2, "neutral")), "describe the image .")


def _recorder(store: list):
    return lambda h: store.append(h[0].detach().clone())


def test_phase_prompt_and_generated_apply_where_they_say(untrained_world, prepared):
    session = untrained_world
    seen: dict[str, list] = {"prompt": [], "generated": [], "both": []}
    reads = [read("residual", 0, _recorder(seen[p]), phase=p) for p in seen]
    n = len(session.generate(prepared, 4, interventions=reads).tokens)
    assert [h.shape[0] for h in seen["prompt"]] == [prepared.length], "the prompt pass only"
    assert [h.shape[0] for h in seen["generated"]] == [1] * (n - 1 if n == 4 else n), "one position per step"
    assert len(seen["both"]) == len(seen["prompt"]) + len(seen["generated"])
    every: list = []
    session.forward(prepared, interventions=[read("residual", 0, _recorder(every), phase="prompt")])
    assert len(every) == 1, "a plain forward is a prompt pass"


def test_positions_rows_and_the_original_value_elsewhere(untrained_world, prepared):
    session = untrained_world
    inputs = session.batch_inputs([render(sample_scene(i, "neutral")) for i in range(2)],
                                  ["describe the image .", "what color is the circle ?"])
    base = session.layer_outputs(inputs, [1])[0]
    shift = torch.ones(base.shape[-1])
    image = position_mask("image", inputs["input_ids"], session.adapter.image_token_id())
    after = [Intervention("residual", 0, lambda h: h + shift, positions="image", rows=(1,))]
    kept: list = []
    session.call(lambda: session.model(**inputs), [*after, read("residual", 0, kept.append)])
    edited = kept[0]
    plain: list = []
    session.call(lambda: session.model(**inputs), [read("residual", 0, plain.append)])
    delta = edited - plain[0]
    assert torch.equal(delta[0], torch.zeros_like(delta[0])), "row 0 untouched"
    assert torch.equal(delta[1][~image[1]], torch.zeros_like(delta[1][~image[1]])), "text positions untouched"
    assert torch.allclose(delta[1][image[1]], shift.expand_as(delta[1][image[1]]))


def test_after_image_positions_follow_each_rows_last_image_token(untrained_world):
    ids = torch.tensor([[0, 0, 9, 9, 5, 6], [9, 9, 9, 5, 6, 7]])
    mask = position_mask("after_image", ids, 9)
    assert mask.tolist() == [[False, False, False, False, True, True], [False, False, False, True, True, True]]
    assert position_mask("all", ids, 9) is None
    with pytest.raises(StudioError, match="position mask"):
        position_mask(torch.ones(1, 6, dtype=torch.bool), ids, 9)


@pytest.mark.parametrize("kwargs,needle", [({"site": "mlp"}, "site"), ({"phase": "later"}, "phase"),
                                           ({"positions": "middle"}, "positions"), ({"layer": -1}, "layer")])
def test_bad_interventions_are_refused(kwargs, needle):
    spec = {"site": "residual", "layer": 0, "fn": lambda h: h, **kwargs}
    with pytest.raises(InputError, match=needle):
        Intervention(**spec)


def test_no_hook_outlives_a_call_that_fails_or_a_layer_out_of_range(untrained_world, prepared):
    session = untrained_world
    session.forward(prepared)
    before = hook_count(session.model)

    def broken(h):
        raise RuntimeError("edit failed")
    with pytest.raises(RuntimeError, match="edit failed"):
        session.forward(prepared, interventions=[Intervention("residual", 1, broken)])
    assert hook_count(session.model) == before
    with pytest.raises(InputError, match="out of range"):
        session.forward(prepared, interventions=[Intervention("residual", 99, lambda h: h)])
    assert hook_count(session.model) == before
    reads: list = []
    stream = (session.forward(prepared, interventions=[read("residual", 0, reads.append)]) for _ in range(3))
    next(stream)
    stream.close()
    assert hook_count(session.model) == before and len(reads) == 1


def test_attention_reads_need_eager_attention(untrained_world, prepared):
    session = untrained_world
    weights: list = []
    with pytest.raises(StudioError, match="eager"):
        session.forward(prepared, interventions=[read("attention_weights", 0, weights.append)])
    with session.attention_implementation("eager", text_only=True):
        session.forward(prepared, interventions=[read("attention_weights", 0, weights.append)])
    assert weights[0].shape[-1] == weights[0].shape[-2] == prepared.length
    assert torch.allclose(weights[0].sum(-1), torch.ones(weights[0].shape[:-1]), atol=1e-5)


def test_attention_inputs_are_read_through_the_models_own_kernel(untrained_world, prepared):
    """The read leaves the output bit-identical, rebuilds the eager weights exactly, restores the
    implementation even when the reader fails, and is refused as an edit."""
    session = untrained_world
    text = session.model.config.text_config
    baseline = session.forward(prepared).logits
    seen: list = []
    logits = session.forward(prepared, interventions=[read("attention_inputs", 1, seen.append)]).logits
    assert torch.equal(logits, baseline), "the sdpa kernel still ran"
    assert text._attn_implementation == "sdpa"
    (inputs,) = seen
    assert inputs.query.shape[2] == inputs.key.shape[2] == prepared.length
    weights: list = []
    with session.attention_implementation("eager", text_only=True):
        session.forward(prepared, interventions=[read("attention_weights", 1, weights.append),
                                                 read("attention_inputs", 1, seen.append)])
    for captured in seen:
        log = QueryKeyLog()
        log.add(captured)
        rebuilt = log.assemble(prepared.length).weights()
        assert torch.allclose(rebuilt, weights[0][0].float(), atol=1e-6)
    assert text._attn_implementation == "sdpa"

    def broken(inputs):
        raise RuntimeError("reader failed")
    with pytest.raises(RuntimeError, match="reader failed"):
        session.forward(prepared, interventions=[Intervention("attention_inputs", 0, broken)])
    assert text._attn_implementation == "sdpa"
    with pytest.raises(StudioError, match="read only"):
        session.forward(prepared, interventions=[Intervention("attention_inputs", 0, lambda inputs: inputs.query)])
    assert torch.equal(session.forward(prepared).logits, baseline)


def test_attention_mask_edits_work_under_the_models_own_kernel(untrained_world, prepared):
    """Hiding key j from every query at every layer through the attention_mask site equals the
    model run with position j padded out of its attention mask, under sdpa and eager alike."""
    session = untrained_world
    j = prepared.length - 3

    def hide(mask: torch.Tensor) -> torch.Tensor:
        out = mask.clone()
        out[..., j] = float("-inf")
        return out
    edits = [Intervention("attention_mask", layer, hide) for layer in range(session.n_layers)]
    padded = dict(prepared.inputs)
    padded["attention_mask"] = prepared.inputs["attention_mask"].clone()
    padded["attention_mask"][0, j] = 0
    with torch.inference_mode():
        expected = session.model(**padded).logits[0, -1].float()
    edited = session.forward(prepared, interventions=edits).logits[-1]
    assert torch.allclose(edited, expected, atol=1e-5)
    assert not torch.allclose(edited, session.forward(prepared).logits[-1], atol=1e-3), "the edit matters"
    with session.attention_implementation("eager", text_only=True):
        assert torch.allclose(session.forward(prepared, interventions=edits).logits[-1], expected, atol=1e-5)
    assert session.model.config.text_config._attn_implementation == "sdpa"


def test_kernels_without_a_twin_read_through_sdpas():
    from studio.engine.attention_reads import reading_name
    assert reading_name("flash_attention_2") == "studio-read:sdpa"
    assert reading_name("eager") == "studio-read:eager"
    assert reading_name("studio-read:eager") == "studio-read:eager", "a twin is never wrapped twice"
