"""Models split with accelerate (``device_map`` / ``max_memory``, part of the weights offloaded to
disk): every probe and every decoding method gives what the unsplit session gives."""
from __future__ import annotations

import json

import pytest

from probes import REGISTRY, ProbeRequest, run_probe
from studio.cli import main
from studio.decoding import method_names, strategy_by_name
from studio.engine.errors import InputError, ModelLoadError
from studio.engine.session import ModelSession
from studio.sharing.export import differences
from tiny_models import sample_image, save_tiny

SAMPLE = "cooccur-900.png"


def _split_and_whole(source, budget: str):
    whole = ModelSession.load(source, device="cpu")
    split = ModelSession.load(source, device="cpu", device_map="auto", max_memory=budget)
    placed = set(split.model.hf_device_map.values())
    assert placed == {"cpu", "disk"}, split.model.hf_device_map  # some layers compute from disk
    return whole, split


@pytest.fixture(scope="module")
def embedded_pair():
    return _split_and_whole(None, "cpu=3MB")


@pytest.fixture(scope="module")
def qwen_pair(tmp_path_factory):
    folder = save_tiny("qwen2_vl", tmp_path_factory.mktemp("qwen"))
    return _split_and_whole(str(folder), "cpu=200KB")


def _request(session):
    from studio.engine.assets import asset
    image = asset(f"samples/{SAMPLE}") if session.source == "embedded" else sample_image(32, 32)
    return ProbeRequest(image, "describe the image .", 6)


@pytest.mark.parametrize("pair", ["embedded_pair", "qwen_pair"])
@pytest.mark.parametrize("probe", sorted(REGISTRY))
def test_every_probe_equals_the_unsplit_session(pair, probe, request):
    whole, split = request.getfixturevalue(pair)
    if REGISTRY[probe].needs_fit and whole.source != "embedded":
        pytest.skip("steering, clamping and SAV read fits made for the embedded model")
    expected = run_probe(whole, probe, _request(whole))
    got = run_probe(split, probe, _request(split))
    assert differences(got, expected, rtol=1e-4, atol=1e-5) == []


@pytest.mark.parametrize("pair", ["embedded_pair", "qwen_pair"])
@pytest.mark.parametrize("method", method_names())
def test_every_decoding_method_equals_the_unsplit_session(pair, method, request):
    from studio.world.anchors import register
    register()  # the world's text-to-image model, for anchors on the embedded model
    whole, split = request.getfixturevalue(pair)
    strategy = strategy_by_name(method)
    try:
        strategy.check(whole)
    except InputError as refused:  # anchors on a model with no text-to-image callable: refused alike
        with pytest.raises(InputError, match="no text-to-image"):
            strategy.check(split)
        assert "no text-to-image" in str(refused)
        return
    answers = [[(t.id, round(t.prob, 5)) for t in s.generate(s.prepare(_request(s).image, "what is this ?"), 6,
                                                             strategy).tokens] for s in (whole, split)]
    assert answers[0] == answers[1]


@pytest.mark.parametrize("pair", ["embedded_pair", "qwen_pair"])
def test_sid_removing_its_tokens_equals_the_unsplit_session(pair, request):
    whole, split = request.getfixturevalue(pair)
    strategy = strategy_by_name("sid", prune="drop", layer=1)
    answers = [[(t.id, round(t.prob, 5)) for t in s.generate(s.prepare(_request(s).image, "what is this ?"), 6,
                                                             strategy).tokens] for s in (whole, split)]
    assert answers[0] == answers[1]


@pytest.mark.parametrize("options, needle", [
    ({"device_map": "nowhere"}, "neither one of auto"),
    ({"max_memory": "7=1GiB"}, "GPU 7"),
    ({"max_memory": "cpu=lots"}, "not DEVICE=SIZE"),
    ({"max_memory": "cpu=1KB"}, "no room for any layer"),
])
def test_bad_placements_are_one_clear_error(options, needle):
    with pytest.raises(ModelLoadError, match=needle):
        ModelSession.load(None, device="cpu", **options)


def test_device_map_file_naming_a_missing_device_is_one_cli_line(tmp_path, capsys):
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"model": "cuda:3", "lm_head": "cpu"}))
    from studio.engine.assets import asset
    assert main(["describe", str(asset(f"samples/{SAMPLE}")), "--device-map", str(mapping)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "GPU 3" in err[0]
