"""The EOS-decision probe: its last layer is the model's own distribution, its end ids are the right ones."""
import numpy as np
import pytest
import torch

from probes import ProbeRequest, run_probe
from probes.eos import end_token_ids, step_positions, stop_token_ids
from probes.runs import get_run
from studio.engine.session import ModelSession
from studio.world.language import CAPTION_PROMPT
from studio.world.render import render
from studio.world.scenes import sample_scene
from tiny_models import FAMILIES, build_tiny, sample_image
from views.registry import figures


@pytest.fixture(params=["embedded", *FAMILIES])
def case(request):
    """(session, request): the world model captioning a bias scene, or a tiny family on a sample image."""
    if request.param == "embedded":
        session = request.getfixturevalue("embedded")
        return session, ProbeRequest(render(sample_scene(0, "cooccur")), CAPTION_PROMPT, 48)
    model, processor = build_tiny(request.param)
    return ModelSession(model, processor), ProbeRequest(sample_image(40, 24), "what is this ?", 5)


def test_last_layer_p_end_is_the_models_own_probability_at_every_step(case):
    session, request = case
    result = run_probe(session, "eos", request)
    run = get_run(session, request)
    answer = [run.token_map.input_ids[p] for p in run.answer_positions]
    ids = torch.from_numpy(result.end_ids)
    # the scores that chose each answer token (the generation pass itself), summed over the end ids
    chosen = torch.softmax(run.answer_logits, dim=-1)[:, ids].sum(-1).numpy()
    assert result.p_end.shape == (session.n_layers, len(answer) + 1)
    assert np.abs(result.p_end[-1, :len(answer)] - chosen).max() <= 1e-6
    # the step after the last answer token, from one plain pass over prompt + answer
    full = session.forward(run.prepared, extra_ids=answer).logits
    last = torch.softmax(full[run.prepared.length - 1 + len(answer)], dim=-1)[ids].sum().item()
    assert abs(result.p_end[-1, -1] - last) <= 1e-6
    assert np.allclose(result.p_ids.sum(-1), result.p_end, atol=1e-6)
    assert result.step_ids[:-1].tolist() == answer
    assert result.step_ids[-1] == int(full[run.prepared.length - 1 + len(answer)].argmax())


def test_the_world_models_end_ids_are_its_end_token_and_full_stop(embedded):
    tok = embedded.tokenizer
    ids, n_eos = end_token_ids(embedded)
    assert ids == [tok.convert_tokens_to_ids("<|end|>"), tok.convert_tokens_to_ids(".")] and n_eos == 1
    assert tok.convert_tokens_to_ids("<image>") not in ids, "the image placeholder stops generation but ends nothing"
    result = run_probe(embedded, "eos", ProbeRequest(render(sample_scene(1, "neutral")), CAPTION_PROMPT, 48))
    assert result.end_tokens == ["<|end|>", "."]
    assert result.steps[-2:] == [".", "<|end|>"], "a world caption ends with a full stop, then EOS"
    assert result.p_end[-1, -2] > 0.5 and result.p_eos[-1, -1] > 0.5 and result.p_eos[-1, -2] < 0.01


class _Vocab:
    def __init__(self, vocab: dict[str, int]) -> None:
        self.vocab = vocab

    def get_vocab(self) -> dict[str, int]:
        return self.vocab


def test_stop_ids_are_the_full_stop_pieces_only():
    assert stop_token_ids(_Vocab({"a": 0, "b": 1}), 10) == [], "no full stop: EOS alone"
    assert stop_token_ids(_Vocab({"a": 0, "▁.": 5, ".": 3, "..": 4}), 10) == [3, 5]
    assert stop_token_ids(_Vocab({"Ġ.": 7, ".": 12}), 10) == [7], "ids past the unembedding are not the model's"


def test_steps_are_read_where_they_are_predicted(embedded):
    request = ProbeRequest(render(sample_scene(2, "neutral")), CAPTION_PROMPT, 48)
    run = get_run(embedded, request)
    positions = step_positions(run)
    assert positions[:-1] == [run.predicting_position(i) for i in range(len(run.answer_positions))]
    assert positions[-1] == run.answer_positions[-1] == run.hidden.shape[1] - 1


def test_default_figures_show_p_end(embedded):
    result = run_probe(embedded, "eos", ProbeRequest(render(sample_scene(0, "cooccur")), CAPTION_PROMPT, 48))
    figs = figures(result)
    assert np.array_equal(np.asarray(figs["heatmap"].data[0].z), result.p_end)
    assert np.allclose(figs["curve"].data[0].y, result.p_end[-1]) and np.allclose(figs["curve"].data[1].y,
                                                                                    result.p_eos[-1])
    assert list(figs["curve"].data[0].x)[-1] == f"{len(result.steps) - 1}:{result.steps[-1]}"
