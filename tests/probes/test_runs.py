"""The run cache every probe reads: one run per (pixels, prompt, answer length), least recently
used evicted first, and a hit that never calls the model again."""
import numpy as np

from probes import ProbeRequest
from probes.runs import CACHE_SIZE, RunCache, cache_for, get_run, request_key
from studio.world.render import render
from studio.world.scenes import sample_scene


def test_the_key_is_the_pixels_the_prompt_and_the_answer_length(tmp_path):
    image = render(sample_scene(5, "neutral"))
    image.save(tmp_path / "a.png")
    base = request_key(ProbeRequest(image, "describe the image .", 8))
    assert request_key(ProbeRequest(str(tmp_path / "a.png"), " describe the image . ", 8)) == base, \
        "the same pixels from a file, the prompt stripped"
    assert request_key(ProbeRequest(np.asarray(image), "describe the image .", 8)) == base
    assert request_key(ProbeRequest(image, "describe the image .", 9)) != base
    assert request_key(ProbeRequest(image, "what color is the circle ?", 8)) != base
    assert request_key(ProbeRequest(render(sample_scene(6, "neutral")), "describe the image .", 8)) != base
    assert request_key(ProbeRequest(None, "describe the image .", 8))[0] == "no-image"


def test_least_recently_used_runs_are_evicted_first():
    cache = RunCache(size=3)
    for key in "abc":
        cache.put((key,), key)
    assert cache.get(("a",)) == "a"  # a is now the most recent
    cache.put(("d",), "d")
    assert cache.get(("b",)) is None, "b was the least recently used"
    assert [k[0] for k in cache.runs] == ["c", "a", "d"]
    assert CACHE_SIZE >= 4


def test_a_cached_run_is_served_without_calling_the_model(untrained_world, monkeypatch):
    request = ProbeRequest(render(sample_scene(8, "neutral")), "describe the image .", 3)
    cache = cache_for(untrained_world)
    first = get_run(untrained_world, request)
    misses = cache.misses

    def refuse(*args, **kwargs):
        raise AssertionError("the model was called for a cached run")
    monkeypatch.setattr(untrained_world, "call", refuse)
    assert get_run(untrained_world, ProbeRequest(np.asarray(request.image), " describe the image .", 3)) is first
    assert cache.misses == misses


def test_the_runs_attention_log_grows_by_one_position_per_step(untrained_world):
    """Each generated step keeps only its new query and key, in storage of their own (a view of
    the step's whole key would keep every step's full cache alive: steps x positions)."""
    from studio.world.render import render
    from studio.world.scenes import sample_scene
    run = get_run(untrained_world, ProbeRequest(render(sample_scene(4, "neutral")), "describe the image .", 6))
    length = run.hidden.shape[1]
    for log in run.attention:
        assert log.prompt is not None and log.prompt.key.shape[2] == run.prepared.length
        assert len(log.steps) >= length - run.prepared.length
        for step in log.steps:
            for tensor in (step.query, step.key):
                assert tensor.shape[1] == 1
                assert tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
        assert log.assemble(length).keys.shape[1] == length
