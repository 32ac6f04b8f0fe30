"""Families without an adapter of their own: the generic adapter maps image tokens at token level
(a grid only when it is certain), every probe that needs no geometry runs, panels that need it
say so, and models whose image never enters the token stream are refused with the reason."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from probes import REGISTRY, ProbeRequest, run_probe
from studio.adapters import AdapterError, GenericAdapter, LlavaAdapter
from studio.cli import main
from studio.engine.errors import ModelLoadError
from studio.engine.hooks import hook_count
from studio.engine.loading import load_model
from studio.engine.session import ModelSession
from tiny_models import build_tiny, sample_image
from tiny_models.generic import QUERIES, instructblip, refused_configs
from views.registry import figures


@pytest.fixture(scope="module")
def blip():
    config, model_class, processor = instructblip()
    torch.manual_seed(0)
    model = model_class(config).eval()
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    return ModelSession(model, processor)


def test_query_tokens_are_mapped_at_token_level(blip):
    assert isinstance(blip.adapter, GenericAdapter)
    prepared = blip.prepare(sample_image(40, 24), "what is this ?")
    ids = prepared.inputs["input_ids"][0]
    assert prepared.token_map.image_positions == (ids == blip.adapter.image_token_id()).nonzero().flatten().tolist()
    assert len(prepared.token_map.image_positions) == QUERIES and prepared.token_map.image_positions[0] == 0
    assert prepared.token_map.grids == [] and prepared.token_map.main_grid is None
    assert all(p.row is None for p in prepared.token_map.image.values())


def test_probes_without_geometry_run_and_the_rest_say_why(blip):
    request = ProbeRequest(sample_image(32, 32), "what is this ?", max_new_tokens=3)
    prepared = blip.prepare(request.image, request.prompt)
    plain = blip.forward(prepared).logits
    hooks = hook_count(blip.model)
    for name, probe in REGISTRY.items():
        if probe.needs_fit:
            continue
        if name == "attribution":
            with pytest.raises(AdapterError, match="patch geometry unknown"):
                run_probe(blip, name, request)
            continue
        result = run_probe(blip, name, request)
        for title, figure in figures(result, np.asarray(request.image)).items():
            assert figure is not None, title
    lens = run_probe(blip, "logit_lens", request)
    n = plain.shape[0]
    assert np.allclose(lens.top_probs[-1, :n, 0], torch.softmax(plain, -1).max(-1).values.numpy(), atol=1e-5), \
        "the lens at the last layer is the model's distribution"
    from views import attention, logit_lens
    attention_result = run_probe(blip, "attention", request)
    drawn = attention.patch_attention(attention_result, 0, 0, None, np.asarray(request.image))
    assert "patch geometry unknown" in drawn.layout.title.text
    assert "patch geometry unknown" in logit_lens.patch_grid(lens, 0, lens.answer_ids[0], None).layout.title.text
    assert hook_count(blip.model) == hooks and torch.equal(blip.forward(prepared).logits, plain)


def test_a_square_patch_grid_is_used_when_certain():
    model, processor = build_tiny("llava")
    generic, own = GenericAdapter(model, processor), LlavaAdapter(model, processor)
    session = ModelSession(model, processor)
    prepared = session.prepare(sample_image(32, 32), "what is this ?")
    ids, inputs = prepared.inputs["input_ids"][0], prepared.inputs
    assert generic.image_layout(ids, prepared.token_map.tokens, inputs, (32, 32)) == \
        own.image_layout(ids, prepared.token_map.tokens, inputs, (32, 32))
    assert generic.decoder_layers() is own.decoder_layers() and generic.unembedding() is own.unembedding()


@pytest.mark.parametrize("kind", ["cross-attention", "encoder-decoder"])
def test_models_without_image_tokens_in_the_stream_are_refused_with_the_reason(kind, tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(refused_configs()[kind].to_dict()))
    save_file({"w": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ModelLoadError, match=kind):
        load_model(str(tmp_path))
    assert main(["describe", str(sample_image_file(tmp_path)), "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and kind in err[0], err


def sample_image_file(folder):
    path = folder / "image.png"
    sample_image(32, 32).save(path)
    return path


def test_a_saved_generic_model_answers_through_the_cli(blip, tmp_path, capsys):
    blip.model.save_pretrained(tmp_path / "blip")
    blip.processor.save_pretrained(tmp_path / "blip")
    image = sample_image_file(tmp_path)
    assert main(["describe", str(image), "--prompt", "what is this ?", "--model", str(tmp_path / "blip"),
                 "--max-new-tokens", "3"]) == 0
    assert main(["probe", "logit_lens", str(image), "--model", str(tmp_path / "blip"), "--max-new-tokens", "3"]) == 0
    assert "logit_lens: " in capsys.readouterr().out
