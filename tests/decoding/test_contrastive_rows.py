"""The contrastive row protocol, checked where a wrong amateur would hide: VCD's amateur really
sees the noised pixels and the contrast uses its logits; ICD's disturbed rows line up with their
experts under left padding; SID keeps the least-attended vision tokens; batched decoding with
every strategy equals decoding each request alone."""
import pytest
import torch

from studio.decoding import strategy_by_name
from studio.decoding.contrastive import ContrastiveBatch, contrast
from studio.decoding.icd import DISTURBANCE
from studio.decoding.sid import CT2SState
from studio.decoding.vcd import diffuse
from studio.engine.errors import InputError
from studio.engine.session import Prepared
from studio.world.render import render
from studio.world.scenes import sample_scene

PROMPTS = ["describe the image .", "what color is the circle ?"]


@pytest.fixture(scope="module")
def prepared(untrained_world):
    return untrained_world.prepare(render(sample_scene(4, "neutral")), "describe the image .")


def test_vcd_amateur_sees_the_noised_image_and_the_contrast_uses_its_logits(untrained_world, prepared):
    session = untrained_world
    vcd = strategy_by_name("vcd", alpha=1.0, beta=0.0, noise_step=500)
    batch = vcd.batch(session, prepared)
    assert isinstance(batch, ContrastiveBatch) and list(batch.experts) == [0] and list(batch.amateurs) == [1]
    pixels = prepared.inputs["pixel_values"]
    noised = diffuse(pixels, 500, 0)
    assert torch.equal(batch.inputs["pixel_values"][:1], pixels)
    assert torch.equal(batch.inputs["pixel_values"][1:], noised) and not torch.equal(noised, pixels)
    out = session.generate(prepared, 3, vcd)
    alone = Prepared({**prepared.inputs, "pixel_values": noised}, prepared.token_map, prepared.image, prepared.prompt)
    amateur = session.forward(alone).logits[-1]
    expert = session.forward(prepared).logits[-1]
    assert torch.allclose(out.trace["amateur"][0], amateur, atol=1e-4)
    assert torch.allclose(out.trace["expert"][0], expert, atol=1e-4)
    assert torch.allclose(out.trace["contrast"][0], 2 * expert - amateur, atol=1e-3)
    assert out.tokens[0].id == int(contrast(expert, amateur, 1.0, 0.0).argmax())


def test_icd_disturbed_rows_line_up_with_their_experts_under_left_padding(embedded):
    icd = strategy_by_name("icd")
    images = [render(sample_scene(i, "neutral")) for i in range(2)]
    batch = icd.rows(embedded, images, PROMPTS)
    assert isinstance(batch, ContrastiveBatch) and batch.layout == "left" and batch.answers == 2
    ids, mask = batch.inputs["input_ids"], batch.inputs["attention_mask"]
    assert mask[:, -1].all(), "left padding: every row's next-token position is its last"
    for expert, amateur, image, prompt in zip(batch.experts, batch.amateurs, images, PROMPTS):
        alone = embedded.batch_inputs([image], [prompt])["input_ids"][0]
        disturbed = embedded.batch_inputs([image], [f"{DISTURBANCE} {prompt}"])["input_ids"][0]
        assert ids[expert][mask[expert] == 1].tolist() == alone.tolist()
        assert ids[amateur][mask[amateur] == 1].tolist() == disturbed.tolist()
        assert len(disturbed) > len(alone), "the disturbance is really there"
    with pytest.raises(InputError, match="needs 6 rows"):
        ContrastiveBatch(batch.inputs, 3, "left")


@pytest.mark.parametrize("method", ["greedy", "vcd", "sid", "icd"])
def test_batched_answers_with_a_strategy_equal_each_request_alone(embedded, method):
    images = [render(sample_scene(i, "cooccur")) for i in range(3)]
    prompts = ["describe the image .", "what color is the circle ?", "is there a ring in the image ?"]
    strategy = strategy_by_name(method)
    together = embedded.answer_batch(images, prompts, 10, strategy)
    alone = [embedded.answer_batch([i], [p], 10, strategy)[0] for i, p in zip(images, prompts)]
    assert together == alone
    single = [embedded.decode_answer([t.id for t in embedded.generate(embedded.prepare(i, p), 10, strategy).tokens])
              for i, p in zip(images, prompts)]
    assert together == single, "answer_batch and generate decode the same way"


def test_sid_selection_keeps_the_least_attended_tokens():
    state = CT2SState(image_positions=torch.tensor([[2, 3, 4, 5]]), keep_ratio=0.5)
    weights = torch.zeros(1, 2, 3, 8)
    weights[0, :, -1, 2:6] = torch.tensor([[0.4, 0.1, 0.3, 0.05], [0.2, 0.1, 0.5, 0.05]])
    weights[0, :, 0, 2:6] = torch.tensor([1.0, 0.0, 0.0, 0.0])  # earlier queries do not count
    state.select(weights)
    assert state.kept_per_step == [[5, 3]], "head-mean attention 0.05 (pos 5) and 0.1 (pos 3) are the least"
    assert sorted(state.dropped[0].tolist()) == [2, 4]
    mask = torch.zeros(1, 1, 3, 8)
    masked = state.mask_dropped(mask)
    assert (masked[0, 0, :, [2, 4]] == torch.finfo(mask.dtype).min).all()
    assert (masked[0, 0, :, [0, 1, 3, 5, 6, 7]] == 0).all()


def test_sid_keeps_what_the_model_attends_least_at_the_layer_before(untrained_world, prepared):
    session = untrained_world
    out = session.generate(prepared, 1, strategy_by_name("sid", layer=1, keep_ratio=0.25))
    with session.attention_implementation("eager", text_only=True), torch.inference_mode():
        attention = session.model(**prepared.inputs, output_attentions=True).attentions[0]
    images = prepared.token_map.image_positions
    importance = attention[0, :, -1].float().mean(0)[images]
    expected = [images[i] for i in importance.argsort()[:16].tolist()]
    assert out.trace["kept"][0] == expected


def test_the_unembedding_of_several_rows_gets_a_contiguous_input(untrained_world, prepared):
    """Each row's last prompt position, sliced from [B, L, d], is not contiguous for B > 1, and
    torch then multiplies by a copy of the unembedding expanded over the rows (one row: see
    ``tests/test_session.py``)."""
    seen = []
    head = untrained_world.adapter.unembedding()
    handle = head.register_forward_hook(lambda m, args, out: seen.append((args[0].shape[0], args[0].is_contiguous())))
    try:
        untrained_world.generate(prepared, 3, strategy_by_name("vcd"))
    finally:
        handle.remove()
    assert seen == [(2, True)] * 3
