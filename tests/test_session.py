"""ModelSession on the embedded world model: token map, capture, lens identity, generation."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from studio.engine.errors import InputError
from studio.engine.hooks import hook_count
from studio.engine.session import MAX_PROMPT_CHARS
from studio.world.render import object_box, render
from studio.world.scenes import sample_scene


@pytest.fixture(scope="module")
def prepared(embedded):
    return embedded.prepare(render(sample_scene(4, "neutral")), "Describe the image.")


def test_token_map_places_every_patch_of_the_8x8_grid(embedded, prepared):
    tmap = prepared.token_map
    assert len(tmap.grids) == 1 and (tmap.grids[0].rows, tmap.grids[0].cols) == (8, 8)
    positions = tmap.image_positions
    assert len(positions) == 64 and positions == list(range(positions[0], positions[0] + 64))
    assert tmap.image[positions[9]].row == 1 and tmap.image[positions[9]].col == 1
    assert all(tmap.tokens[p] == "<image>" for p in positions)
    assert [tmap.tokens[p] for p in tmap.text_positions][-5:] == ["describe", "the", "image", ".", "<|assistant|>"]
    assert tmap.grids[0].patch_box(1, 2) == (16.0, 8.0, 24.0, 16.0)
    assert tmap.grids[0].locate(17, 9) == (1, 2) and tmap.grids[0].locate(70, 3) is None


def test_capture_changes_no_bit_and_lens_reproduces_logits(embedded, prepared):
    plain = embedded.forward(prepared)
    before = hook_count(embedded.model)  # after a first pass: transformers adds its own hooks lazily
    captured = embedded.forward(prepared, capture=True)
    assert hook_count(embedded.model) == before
    assert torch.equal(plain.logits, captured.logits)
    assert captured.hidden.shape == (embedded.n_layers, prepared.length, embedded.model.config.text_config.hidden_size)
    with torch.inference_mode():
        lens = embedded.adapter.lens(captured.hidden[-1]).float()
    assert (lens - plain.logits).abs().max().item() <= 1e-5


def test_generation_returns_tokens_with_probabilities_and_alternatives(embedded, prepared):
    gen = embedded.generate(prepared, max_new_tokens=40)
    assert gen.text and gen.tokens
    for t in gen.tokens:
        assert 0 < t.prob <= 1 and len(t.top) == 5
        assert t.top[0][1] >= t.prob - 1e-6, "greedy picks the most probable token"
    again = embedded.generate(prepared, max_new_tokens=40)
    assert [t.id for t in again.tokens] == [t.id for t in gen.tokens]


def test_prompt_limits_give_clear_messages(embedded):
    image = render(sample_scene(0))
    with pytest.raises(InputError, match="empty"):
        embedded.prepare(image, "   ")
    with pytest.raises(InputError, match=str(MAX_PROMPT_CHARS)):
        embedded.prepare(image, "x" * 100_000)
    with pytest.raises(InputError, match="max_new_tokens"):
        embedded.generate(embedded.prepare(image, "describe the image ."), max_new_tokens=0)


def test_text_only_prompt_has_no_image_tokens(embedded):
    prepared = embedded.prepare(None, "how many objects are there ?")
    assert prepared.token_map.image_positions == [] and prepared.token_map.grids == []
    assert embedded.generate(prepared, max_new_tokens=3).tokens is not None


def test_object_boxes_fall_on_patches_of_their_cell():
    scene = sample_scene(1, "neutral")
    for obj in scene.objects:
        x0, y0, x1, y1 = object_box(obj)
        assert obj.col * 16 <= x0 < x1 <= (obj.col + 1) * 16 and obj.row * 16 <= y0 < y1 <= (obj.row + 1) * 16


def test_out_of_memory_becomes_a_clear_error_and_the_session_recovers(embedded, monkeypatch):
    from studio.engine.errors import ResourceError
    prepared = embedded.prepare(render(sample_scene(0)), "how many objects are there ?")

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(embedded.model, "generate", out_of_memory)
    with pytest.raises(ResourceError, match="ran out of memory"):
        embedded.generate(prepared, max_new_tokens=3)
    monkeypatch.undo()
    assert embedded.generate(prepared, max_new_tokens=3).tokens


@pytest.mark.parametrize("probe,params", [("attribution", {"ig_steps": 2}), ("drift", {}),
                                          ("steer", {"alpha": 1.0}), ("decode", {"method": "sid"})])
def test_every_model_call_is_covered_by_the_out_of_memory_guard(embedded, monkeypatch, probe, params):
    from probes import ProbeRequest, run_probe
    from probes.runs import get_run
    from studio.engine.errors import ResourceError
    request = ProbeRequest(render(sample_scene(1)), "describe the image .", 4)
    get_run(embedded, request)  # the cached run exists; the probe's own model calls must fail cleanly

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")
    monkeypatch.setattr(embedded.adapter.decoder_layers()[0], "forward", out_of_memory)
    with pytest.raises(ResourceError, match="ran out of memory"):
        run_probe(embedded, probe, request, **params)
    monkeypatch.undo()
    assert run_probe(embedded, "drift", request).cos_blank.shape == (embedded.n_layers,)


def test_the_attention_rebuild_is_covered_by_the_out_of_memory_guard(embedded, monkeypatch):
    """The attention probe calls no model (it rebuilds the weights from the cached run), but
    the rebuild uses the model's device memory: it runs under the same guard."""
    from probes import ProbeRequest, run_probe
    from probes.runs import get_run
    from studio.engine.attention_reads import LayerAttention
    from studio.engine.errors import ResourceError
    request = ProbeRequest(render(sample_scene(1)), "describe the image .", 4)
    get_run(embedded, request)

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")
    monkeypatch.setattr(LayerAttention, "weights", out_of_memory)
    with pytest.raises(ResourceError, match="ran out of memory"):
        run_probe(embedded, "attention", request)
    monkeypatch.undo()
    assert run_probe(embedded, "attention", request).rollout.shape[0] == 4


@pytest.mark.parametrize("family", ["idefics3", "qwen2_vl"])
def test_generate_with_nothing_applied_adds_no_hook_and_decodes_as_model_generate(family):
    """What "hooks idle" means: while session.generate decodes greedily with no intervention, no
    module holds a hook, the attention kernel is the model's own, and the tokens and their scores
    are plain model.generate's, bit for bit."""
    from studio.engine.session import ModelSession
    from tiny_models import build_tiny, sample_image
    session = ModelSession(*build_tiny(family))
    prepared = session.prepare(sample_image(40, 24), "what is this ?")
    kernel = session.model.config._attn_implementation
    seen = []

    def spy(module, args, kwargs):
        seen.append((sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in session.model.modules()),
                     session.model.config._attn_implementation))
    original = session.model.generate
    generation = session.generate(prepared, max_new_tokens=6)
    with torch.inference_mode():
        plain = original(**prepared.inputs, max_new_tokens=6, do_sample=False, eos_token_id=session.eos_ids,
                         pad_token_id=session.tokenizer.pad_token_id, return_dict_in_generate=True, output_logits=True)
    handle = session.model.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        session.generate(prepared, max_new_tokens=6)
    finally:
        handle.remove()
    assert seen and all(item == (1, kernel) for item in seen), "only the spy's own hook, the model's own kernel"
    new = plain.sequences[0, prepared.length:].tolist()
    assert [t.id for t in generation.tokens] == [t for t in new if t not in session.eos_ids][:len(generation.tokens)]
    assert [t.prob for t in generation.tokens] == [
        float(torch.softmax(step[0].float(), -1)[t]) for step, t in zip(plain.logits, new)][:len(generation.tokens)]


@pytest.mark.parametrize("family", ["idefics3", "qwen2_vl"])
def test_studio_passes_hand_the_unembedding_canonical_strides(family):
    """The prompt pass slices the last position from [1, L, d], which keeps the stride of L (in
    bfloat16 on a CPU, a 152k-word unembedding of it took seconds); every studio call but plain
    greedy decoding (the run, drift's passes, attribution's evaluations) hands it a fresh copy.
    The answer's scores stay plain model.generate's bit for bit, and the read states a plain pass's."""
    from studio.engine.session import ModelSession
    from tiny_models import build_tiny, sample_image
    session = ModelSession(*build_tiny(family))
    prepared = session.prepare(sample_image(40, 24), "what is this ?")
    strides = []
    handle = session.adapter.unembedding().register_forward_hook(
        lambda m, args, out: strides.append(args[0].stride() == torch.empty(args[0].shape).stride()))
    try:
        run = session.read_generation(prepared, max_new_tokens=4)
        states = session.last_states(prepared)  # drift's passes: one position projected, every layer read
        session.call(lambda: session.model(**prepared.inputs, logits_to_keep=1))  # as attribution evaluates
    finally:
        handle.remove()
    with torch.inference_mode():
        plain = session.model.generate(**prepared.inputs, max_new_tokens=5, do_sample=False, eos_token_id=session.eos_ids,
                                       pad_token_id=session.tokenizer.pad_token_id, return_dict_in_generate=True,
                                       output_logits=True)
    assert len(strides) == len(plain.logits) + 2 and all(strides), "every call of the unembedding saw canonical strides"
    answer = len(run.generation.tokens)
    assert answer and torch.equal(run.answer_logits, torch.stack([s[0].float() for s in plain.logits[:answer]]))
    with torch.inference_mode():
        hidden = session.model(**prepared.inputs, output_hidden_states=True).hidden_states
    assert torch.equal(states[0], hidden[1][0, -1]) and torch.equal(states[-2], hidden[-2][0, -1])


class _Overlaps:
    """Counts how many threads are inside a wrapped callable at once (each call lingers a little,
    so two unserialised calls overlap)."""

    def __init__(self) -> None:
        self.inside = 0
        self.most = 0
        self.guard = threading.Lock()

    def wrap(self, fn):
        def counted(*args, **kwargs):
            with self.guard:
                self.inside += 1
                self.most = max(self.most, self.inside)
            try:
                time.sleep(0.005)
                return fn(*args, **kwargs)
            finally:
                with self.guard:
                    self.inside -= 1
        return counted


class _CountedProcessor:
    def __init__(self, processor, overlaps: _Overlaps) -> None:
        self._processor = processor
        self._call = overlaps.wrap(processor)

    def __call__(self, *args, **kwargs):
        return self._call(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._processor, name)


def test_concurrent_requests_never_share_the_tokenizer_at_once(embedded, monkeypatch):
    """A fast tokenizer sets its padding on the shared Rust object at each call: two requests
    encoding at once gave a padded ICD batch another request's "no padding" (a CI failure). Every
    processor and tokenizer call of the session is serialised, and the batches stay right."""
    overlaps = _Overlaps()
    monkeypatch.setattr(embedded, "processor", _CountedProcessor(embedded.processor, overlaps))
    monkeypatch.setattr(embedded.tokenizer, "decode", overlaps.wrap(embedded.tokenizer.decode))
    image = render(sample_scene(0))
    prompts = ["what color is it ?", "describe the image . what color is the diamond next to the square ?"]
    alone = embedded.batch_inputs([image, image], prompts)["input_ids"]

    def request(i: int) -> torch.Tensor | None:
        if i % 2:
            return embedded.batch_inputs([image, image], prompts)["input_ids"]
        embedded.prepare(image, prompts[0])
        embedded.decode_answer([5, 6, 7])
        return None

    with ThreadPoolExecutor(6) as pool:
        batches = [b for b in pool.map(request, range(24)) if b is not None]
    assert overlaps.most == 1
    assert len(batches) == 12 and all(torch.equal(b, alone) for b in batches)
