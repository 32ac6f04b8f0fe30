"""The studio's costs on random-weight models of real published shapes, as ratios to one plain forward.

The embedded world model is tiny, so ``bench.probes`` and ``bench.decoding`` say little about what a
press costs on a model people actually open. This bench builds random-weight models with the
published shapes of SmolVLM-256M, Qwen2-VL-2B, LLaVA-1.5-7B and LLaVA-NeXT (7B-class text, anyres
tiles), entirely offline from the config files in ``bench/shapes/`` (one JSON per shape, naming
its source), with the library's PIL image processors set as published and a word-level tokenizer
(:func:`tiny_models.build_tokenizer`) holding the family's special tokens, and wraps each in a
:class:`~studio.engine.session.ModelSession`.

Per shape, in one process, it prints one table: each cost as a ratio to ONE plain forward over
prompt + answer measured in the same run (median of up to ``--repeats`` calls, fewer when a call
is slow, see ``--budget``): the run (``probes.runs.compute_run``: the greedy answer with every
layer's states captured), each probe of one Inspect press (on that cached run, in the tab's
order) and their sum, the Inspect tab's redraws from stored results (layer slider, token click,
patch click), attribution with default settings (estimated from one timed step of each kind
when its estimate exceeds ``--attribution-budget``, marked "est."), each Mitigate method as
its prompt pass (processing, image encoding and prefill, to the end of the first forward) and
its per-token cost (each later step: forward and logits processors; the tenth percentile of
every step of every call, see :class:`Decoding`), read by a clock on the
model's forward in the same call, as ratios to greedy's, and ``session.generate``
against plain ``model.generate`` on the same inputs with no hooks, both ways, and plain
``model.generate`` against itself, called again (what the run can resolve), and the decoding
loop's own work between forwards, where greedy through the session and plain
``model.generate`` differ (see :class:`Decoding`) (the decoding
calls run in rounds of alternating order, so with ``--repeats`` of 2 or more and a ``--budget``
that lets the rounds run, a drift of the machine falls on each alike). The last row is
the kernel's price of a second batch row (``F.linear`` of the first decoder layer's largest
matrix, 2 rows against 1): a contrastive method decodes two rows per step, so its per-token
ratio cannot fall below it. On this CPU it is about 2 in float32 (MKL's small-batch path) and
about 1 in bfloat16 (as on a GPU); ``--dtype bfloat16`` builds every shape in bfloat16.

Peak extra memory: the growth of the process's resident-set high-water mark (``VmHWM``, reset
through ``/proc/self/clear_refs`` before the step, after ``gc`` and ``malloc_trim``) over its
resident set at the step's start, during the first call of the step (Linux only). It counts
every allocation that became resident, torch's and Python's, and nothing that was already
resident before the step.

The answer is pinned: coordinate 0 of every input embedding is set large and the unembedding
row of "cat" reads it, so greedy decoding of the random model says "cat" at every step. Random
weights otherwise answer with ids the word-level tokenizer cannot spell, so the detector would
find no object word to score, and decoding could stop early at a random end token; pinned, the
detector scores every answer token and every method decodes exactly the requested tokens.

    python -m bench.realsize [--shapes smolvlm-256m,qwen2-vl-2b] [--repeats 3] [--quick] [--json FILE] [--dtype D]

``--quick`` cuts every shape to 2 decoder layers and a 2-layer vision tower, keeping the widths,
vocabulary and token layout, answers 4 tokens, times each step once and always estimates
attribution: a smoke test of every step on every layout, not a measurement.
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import transformers
from transformers import (
    AutoConfig,
    AutoModelForImageTextToText,
    BaseImageProcessor,
    CLIPImageProcessorPil,
    Idefics3Processor,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
    LlavaProcessor,
    PreTrainedModel,
    ProcessorMixin,
    Qwen2VLImageProcessorPil,
    SmolVLMImageProcessorPil,
)

from probes import ProbeRequest, get_probe, run_probe
from probes.attribution import occlusion_mask, occlusion_regions
from probes.runs import Run, cache_for, compute_run, request_key
from studio.decoding import strategy_by_name
from studio.engine.features import image_features_reused
from studio.engine.files import atomic_write_json
from studio.engine.images import load_image
from studio.engine.memory import release_heap
from studio.engine.processors import Qwen2VLImageOnlyProcessor
from studio.engine.session import Generation, ModelSession
from studio.ui.inspect_tab import Inspection, show_patch, show_token
from studio.ui.mitigate_tab import method_settings, sid_layer
from tiny_models import ChatFormat, TokenSpec, build_tokenizer, chat_template, sample_image

T = TypeVar("T")

SHAPES_DIR = Path(__file__).resolve().parent / "shapes"
SHAPES = ("smolvlm-256m", "qwen2-vl-2b", "llava-1.5-7b", "llava-next-long")
PROMPT = "describe the image ."
NEW_TOKENS, QUICK_NEW_TOKENS = 48, 4  # the app's default "Max new tokens"; quick: enough for a second token
QUICK_LAYERS = 2
SEED = 0
ANSWER_WORD = "cat"  # a COCO category, so the detector scores every answer token
PIN_INPUT, PIN_OUTPUT = 100.0, 10.0
INSPECT_PROBES = ("logit_lens", "attention", "detector", "drift")  # what one Inspect press runs, in order
MITIGATE_DEFAULTS = {"alpha": 1.0, "beta": 0.1, "noise_step": 500, "keep_ratio": 0.17}  # the Mitigate tab's sliders
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

# SmolVLM through Idefics3Processor: SmolVLMProcessor needs num2words and a torchvision video
# processor, and expands images into the same text (see tiny_models.idefics_processor).
PROCESSOR_CLASSES: dict[str, tuple[type[ProcessorMixin], type[BaseImageProcessor]]] = {
    "smolvlm": (Idefics3Processor, SmolVLMImageProcessorPil),
    "qwen2_vl": (Qwen2VLImageOnlyProcessor, Qwen2VLImageProcessorPil),
    "llava": (LlavaProcessor, CLIPImageProcessorPil),
    "llava_next": (LlavaNextProcessor, LlavaNextImageProcessorPil),
}

ROW_FORWARD = "plain forward (prompt + answer)"
ROW_RUN = "run: generate + capture"
ROW_PRESS = "Inspect press (the four)"
ROW_FRESH = "Inspect press, new image (run + four)"
ROW_SLIDER = "layer slider (show_token)"
ROW_TOKEN = "token click (show_token)"
ROW_PATCH = "patch click (show_patch)"
ROW_ATTRIBUTION = "attribution (default settings)"
ROW_SESSION_PROMPT = "session.generate: prompt pass"
ROW_SESSION = "session.generate: per token"
ROW_PLAIN_GENERATE = "plain model.generate: per token"
ROW_PLAIN_AGAIN = "plain model.generate again: per token"
ROW_BETWEEN = "session.generate: between forwards"
PROMPT_PASS, PER_TOKEN = "prompt pass", "per token"
STEP_QUANTILE = 0.1  # a decoding step's cost: this quantile of the pooled steps (see Decoding)
# extra interleaved rounds of session greedy against model.generate, and of model.generate against itself
PAIR, PAIR_ROUNDS = ("greedy", "plain", "plain again"), 4
# Mitigate's methods that run on any model (anchors needs a text-to-image model, which no shape here has);
# "sid-drop": SID with prune="drop" (the tab's "SID amateur: drop")
METHODS = ("greedy", "vcd", "sid", "sid-drop", "icd")
VARIANTS = {"sid-drop": ("sid", {"prune": "drop"})}
ROW_TWO_ROWS = "2-row step floor: linear 2 rows"
ROW_SLICED = "unembedding: last position sliced"
ROWS: tuple[str, ...] = (ROW_FORWARD, ROW_RUN, *(f"Inspect: {name}" for name in INSPECT_PROBES), ROW_PRESS, ROW_FRESH,
                         ROW_SLIDER, ROW_TOKEN, ROW_PATCH, ROW_ATTRIBUTION,
                         *(f"Mitigate: {m}: {part}" for m in METHODS for part in (PROMPT_PASS, PER_TOKEN)),
                         ROW_SESSION_PROMPT, ROW_SESSION, ROW_PLAIN_GENERATE, ROW_PLAIN_AGAIN, ROW_BETWEEN,
                         ROW_TWO_ROWS, ROW_SLICED)


def load_shape(name: str) -> dict:
    """The shape's JSON from ``bench/shapes/``; unknown names list the shapes there."""
    path = SHAPES_DIR / f"{name}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SHAPES_DIR.glob("*.json")))
        raise SystemExit(f"error: no shape {name!r} in {SHAPES_DIR} (known: {known})")
    return json.loads(path.read_text())


def build_processor(shape: dict) -> ProcessorMixin:
    """The family's processor with the published image-processor settings and a word-level tokenizer
    holding the family's special tokens and chat template (token ids are small and valid; the
    model's vocabulary size comes from its config)."""
    chat = shape["chat"]
    template = chat_template(ChatFormat(bos=chat["bos"], image=chat["image"], generation=chat["generation"],
                                        turns={role: (open_, close) for role, (open_, close) in chat["turns"].items()}))
    tokenizer = build_tokenizer(TokenSpec(**{**shape["tokens"], "extras": tuple(shape["tokens"]["extras"])}), template)
    processor_class, image_processor_class = PROCESSOR_CLASSES[shape["family"]]
    return processor_class(image_processor=image_processor_class(**shape["image_processor"]), tokenizer=tokenizer,
                           chat_template=template, **shape["processor"])


def build_config(shape: dict, tokenizer, quick: bool) -> transformers.PretrainedConfig:
    """The published config with the tokenizer's ids for the special tokens, the built layer count
    (the shape's stated subset, or 2 in quick mode, where the vision tower gets 2 layers too)."""
    values = copy.deepcopy(shape["config"])
    values.update({name: tokenizer.convert_tokens_to_ids(token) for name, token in shape["token_fields"].items()})
    text = values.get("text_config", values)  # Qwen2-VL's published config is flat
    text.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)
    if quick or shape["decoder_layers"]:
        text["num_hidden_layers"] = QUICK_LAYERS if quick else shape["decoder_layers"]
    if quick:
        vision = values["vision_config"]
        vision["depth" if "depth" in vision else "num_hidden_layers"] = QUICK_LAYERS
    return AutoConfig.for_model(**values)


def pin_answer(model: PreTrainedModel, token_id: int) -> None:
    """Make greedy decoding answer ``token_id`` at every step (see the module docstring): every
    input embedding carries ``PIN_INPUT`` on coordinate 0, which outweighs the random layers'
    contributions and stays positive through the final norm, and the unembedding row of
    ``token_id`` reads that coordinate with weight ``PIN_OUTPUT``. Works with tied embeddings."""
    with torch.no_grad():
        model.get_input_embeddings().weight[:, 0] = PIN_INPUT
        model.get_output_embeddings().weight[token_id, 0] += PIN_OUTPUT


@dataclass
class Built:
    """A shape's session and what was built: layer counts (built / published), sizes, build time."""

    session: ModelSession
    decoder_layers: tuple[int, int]
    vision_layers: tuple[int, int]
    parameters: int
    weight_bytes: int
    seconds: float


def _vision_layers(config: dict) -> int:
    vision = config["vision_config"]
    return vision["depth"] if "depth" in vision else vision["num_hidden_layers"]


def build(shape: dict, quick: bool) -> Built:
    """A random-weight model of ``shape`` (seeded, eval mode, the shape's dtype) in a ModelSession."""
    start = time.perf_counter()
    processor = build_processor(shape)
    tokenizer = processor.tokenizer
    config = build_config(shape, tokenizer, quick)
    text = config.text_config
    tokenizer.model_max_length = text.max_position_embeddings
    torch.manual_seed(SEED)
    model = AutoModelForImageTextToText.from_config(config, dtype=DTYPES[shape["dtype"]]).eval()
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    pin_answer(model, tokenizer.convert_tokens_to_ids(ANSWER_WORD))
    published = shape["config"].get("text_config", shape["config"])["num_hidden_layers"]
    built_vision = _vision_layers(config.to_dict())
    return Built(session=ModelSession(model, processor, source=shape["name"], device="cpu"),
                 decoder_layers=(text.num_hidden_layers, published),
                 vision_layers=(built_vision, _vision_layers(shape["config"])),
                 parameters=sum(p.numel() for p in model.parameters()),
                 weight_bytes=sum(p.numel() * p.element_size() for p in model.parameters()),
                 seconds=time.perf_counter() - start)


def _status_bytes(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field_name} not in /proc/self/status")


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the system, so a step's growth is its own."""
    gc.collect()
    release_heap()


def _watched_call(fn: Callable[[], T]) -> tuple[float, int, T]:
    """One call of ``fn``: its seconds, the peak extra resident memory during it (garbage collected
    and the heap trimmed first, the high-water mark reset to the current resident set) and its result."""
    release_memory()
    start = _status_bytes("VmRSS:")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set
    began = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - began
    return seconds, max(0, _status_bytes("VmHWM:") - start), result


@dataclass
class Cost:
    """A step's median seconds per call (over ``samples`` calls) and the peak extra resident memory
    of its first call; ``estimated`` when computed from timed parts instead of run."""

    seconds: float
    samples: int
    peak_bytes: int
    estimated: bool = False


@dataclass
class Timer:
    """Times steps: up to ``repeats`` calls, fewer when they would take longer than ``budget`` s."""

    repeats: int
    budget: float

    def measure(self, fn: Callable[[], T]) -> tuple[Cost, T]:
        """``fn``'s cost and its last result. The first call also measures peak memory (the high-water
        mark reset just before it); it counts as a sample, so a slow step is run once."""
        first, peak, result = _watched_call(fn)
        times = [first]
        calls = min(self.repeats, max(1, int(self.budget // max(times[0], 1e-6))))
        for _ in range(calls - 1):
            began = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - began)
        return Cost(statistics.median(times), len(times), peak), result

    def measure_each(self, fns: dict[str, Callable[[], object]]) -> dict[str, Cost]:
        """Each of ``fns`` as :meth:`measure`, but in rounds that call every one once, in the
        given order and then in reverse (A B, B A, A B...): a drift of the machine over the run
        (warming up, another process) falls on each alike instead of on whichever ran first."""
        names = list(fns)
        times: dict[str, list[float]] = {name: [] for name in names}
        peaks: dict[str, int] = {}
        for round_ in range(self.repeats):
            for name in names if round_ % 2 == 0 else reversed(names):
                seconds, peak, _ = _watched_call(fns[name])
                times[name].append(seconds)
                peaks.setdefault(name, peak)
            if sum(sum(t) for t in times.values()) * (round_ + 2) / (round_ + 1) > self.budget * len(names):
                break
        return {name: Cost(statistics.median(times[name]), len(times[name]), peaks[name]) for name in names}


@dataclass
class Row:
    """One line of a shape's table: ``value`` in ``unit`` ("s", or "ms/token" for decoding rows) and
    its ratio to ``basis``."""

    label: str
    value: float
    unit: str
    ratio: float
    basis: str
    peak_bytes: int
    samples: int
    estimated: bool = False


@dataclass
class AttributionPlan:
    """What one attribution with default settings costs: model evaluations without gradients
    (occlusion's ablations plus captum's baseline and convergence-delta passes) and integration
    steps with gradients (to the pixels and to the prompt's input embeddings), each kind timed once."""

    evaluations: int
    reused_evaluations: int
    ig_steps: int
    forward: Cost
    reused: Cost
    pixel_step: Cost
    embedding_step: Cost

    @property
    def seconds(self) -> float:
        return (self.evaluations * self.forward.seconds + self.reused_evaluations * self.reused.seconds
                + self.ig_steps * (self.pixel_step.seconds + self.embedding_step.seconds))

    @property
    def peak_bytes(self) -> int:
        return max(self.forward.peak_bytes, self.reused.peak_bytes, self.pixel_step.peak_bytes,
                   self.embedding_step.peak_bytes)

    def summary(self) -> str:
        """How the estimate is made up, for the printed table."""
        return (f"{self.evaluations} evaluations x {self.forward.seconds:.3g} s + {self.reused_evaluations} x "
                f"{self.reused.seconds:.3g} s with the image's encoding reused + {self.ig_steps} x "
                f"({self.pixel_step.seconds:.3g} s pixel step, peak {self.pixel_step.peak_bytes / 2**20:.0f} MiB + "
                f"{self.embedding_step.seconds:.3g} s embedding step, peak "
                f"{self.embedding_step.peak_bytes / 2**20:.0f} MiB)")


def _answer_log_prob(session: ModelSession, inputs: dict, position: int, token: int) -> torch.Tensor:
    """The log-probability of ``token`` at ``position``: what the attribution probe explains."""
    assert inputs["input_ids"].shape[1] == position + 1, "the predicting position is the last"
    logits = session.model(**inputs, logits_to_keep=1, use_cache=False).logits[0, -1].float()
    return torch.log_softmax(logits, dim=-1)[token]


def plan_attribution(session: ModelSession, run: Run, timer: Timer) -> AttributionPlan:
    """Time one step of each kind the attribution probe (``probes.attribution``) takes for answer
    token 0 with default parameters, and count the steps.

    Evaluations: captum's initial evaluation (the unchanged inputs, whose value the probe then
    reuses for both convergence deltas), one per occluded feature (each region of image tokens
    that covers pixels, plus the pixels no token covers), and the pixel baseline; the prompt
    baseline's evaluation reuses the image's encoding (timed as such); the two reads of the
    embedding layer stop right after it and are not counted. The probe's own log-probability
    comes from the run. Both kinds of gradient step recompute every layer in their backward
    pass, and a prompt step reuses the image's encoding, as the probe runs them
    (``tests/probes/test_attribution_families.py`` counts the probe's evaluations).
    """
    params = get_probe("attribution").params()
    position = run.answer_positions[params.answer_index]
    token = run.token_map.input_ids[position]
    inputs = session.extend_inputs(run.prepared.inputs, run.token_map.input_ids[run.prepared.length:position])
    groups = session.adapter.pixel_token_groups(inputs)
    regions = occlusion_regions(run.token_map, params.occlusion_regions)
    features = torch.unique(occlusion_mask(groups, regions)).numel()  # captum's features, as the probe masks
    embedding = session.adapter.embeddings()

    def pixel_step() -> None:
        pixels = inputs["pixel_values"].float().clone().requires_grad_()
        _answer_log_prob(session, {**inputs, "pixel_values": pixels}, position - 1, token).backward()

    def embedding_step() -> None:
        def track(module, args, output: torch.Tensor) -> torch.Tensor:
            return output.requires_grad_()
        handle = embedding.register_forward_hook(track)
        try:
            _answer_log_prob(session, inputs, position - 1, token).backward()
        finally:
            handle.remove()

    def evaluate() -> None:
        session.call(lambda: _answer_log_prob(session, inputs, position - 1, token))
    forward, _ = timer.measure(evaluate)
    pixel, _ = timer.measure(lambda: session.call(pixel_step, grad=True, recompute="all"))
    with image_features_reused(session.model):  # as the probe's prompt gradients: the image encoded once
        session.call(embedding_step, grad=True, recompute="all")
        embedded, _ = timer.measure(lambda: session.call(embedding_step, grad=True, recompute="all"))
        reused, _ = timer.measure(evaluate)
    return AttributionPlan(evaluations=features + 2, reused_evaluations=1, ig_steps=params.ig_steps, forward=forward,
                           reused=reused, pixel_step=pixel, embedding_step=embedded)


@dataclass
class ShapeReport:
    """Everything measured for one shape, as printed and saved."""

    name: str
    source: str
    dtype: str
    decoder_layers: tuple[int, int]
    vision_layers: tuple[int, int]
    parameters: int
    weight_bytes: int
    build_seconds: float
    image_size: list
    image_tokens: int
    prompt_tokens: int
    answer_tokens: int
    rows: list[Row]
    attribution: dict = field(default_factory=dict)


def _steps(generation: Generation) -> int:
    """Decoding steps a generation took (tokens after the prompt, an end token included)."""
    return len(generation.sequence) - generation.prompt.length


def checked_run(shape: dict, run: Run, request: ProbeRequest) -> Run:
    """``run`` when it has the published image-token count and the pinned answer, else an error:
    every row's meaning depends on both."""
    if len(run.token_map.image_positions) != shape["image_tokens"]:
        raise RuntimeError(f"{shape['name']}: {len(run.token_map.image_positions)} image tokens, "
                           f"the published layout gives {shape['image_tokens']}")
    if [t.strip() for t in run.answer_tokens] != [ANSWER_WORD] * request.max_new_tokens:
        raise RuntimeError(f"{shape['name']}: the answer {run.answer_tokens[:8]} is not pinned to {ANSWER_WORD!r}")
    return run


def measure_views(state: Inspection, timer: Timer) -> dict[str, Cost]:
    """The Inspect tab's redraws from stored results: the layer slider moved off its start, another
    answer token clicked, the image's centre patch clicked (the handlers the app calls)."""
    layers = state.lens.answer_probs.shape[0]
    layer = layers // 2  # where the tab's slider starts
    other = layers - 1 if layer != layers - 1 else 0
    height, width = state.image.shape[:2]
    return {ROW_SLIDER: timer.measure(lambda: show_token(state, 0, other))[0],
            ROW_TOKEN: timer.measure(lambda: show_token(state, 1, layer))[0],
            ROW_PATCH: timer.measure(lambda: show_patch(state, 0, width / 2, height / 2))[0]}


@dataclass
class Decoding:
    """A decoding's cost split as the issue asks for it, read from one call decoding ``tokens``
    tokens by a clock on the model's forward: the prompt pass (from the call to the end of the
    first forward: processing, image encoding, prefill; median over the calls) and the per-token
    cost (the time between the ends of two successive forwards: each step's forward and the
    logits processors in between), the :data:`STEP_QUANTILE` quantile of every step of every
    call. A decoding step at a real shape reads every weight once, so it is bound by memory
    bandwidth, which on a shared machine varies from call to call (measured here: the same
    ``model.generate`` at 131 to 187 ms per Qwen2-VL-2B step, steps within a call alike); a
    whole-call average then compares the machine's moods, while the fast tail of the pooled steps,
    taken from calls interleaved with the other side's, compares the code (ten interleaved pairs
    of identical calls: ratio of call means 0.96-1.04, of pooled tenth percentiles 1.000). Greedy
    and plain ``model.generate``, whose ratio is held to 1.02, get :data:`PAIR_ROUNDS` more
    interleaved rounds than the methods (with ``--repeats`` above 1), and so does a second,
    identical plain ``model.generate`` ("plain again"): its ratio to the first is what the run
    can resolve. The pinned answer never stops early.

    ``between``: the median time per step from the end of one forward to the start of the next
    (the decoding loop's own work: logits processors, stopping checks, kept logits), plus the
    median time from the last forward's end to the call's return shared over the call's steps
    (the per-token probabilities ``session.generate`` computes after the loop). Greedy
    through ``session.generate`` with nothing applied calls the same forward as plain
    ``model.generate`` with no hook at all (tested bit-equal), so the two differ only here, and
    this gap, work of the processor rather than of memory bandwidth, is resolvable where the
    whole step is not."""

    cost: Cost
    prompt: float
    per_token: float
    between: float


class StepClock:
    """Times of the start and end of every forward of ``model`` while a call runs (two hooks,
    removed after): per call, the prompt pass (start to the first forward's end), every later
    step (one forward's end to the next's), every gap between forwards (one forward's end
    to the next's start) and the tail after the last forward, per step of its call."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.prompts: list[float] = []
        self.steps: list[float] = []
        self.gaps: list[float] = []
        self.tails: list[float] = []

    def time(self, fn: Callable[[], object]) -> Callable[[], object]:
        def timed() -> object:
            starts: list[float] = []
            ends: list[float] = []
            handles = [self.model.register_forward_pre_hook(lambda *_: starts.append(time.perf_counter())),
                       self.model.register_forward_hook(lambda *_: ends.append(time.perf_counter()))]
            start = time.perf_counter()
            try:
                result = fn()
            finally:
                for handle in handles:
                    handle.remove()
            self.prompts.append(ends[0] - start)
            self.steps.extend(later - earlier for earlier, later in zip(ends, ends[1:]))
            self.gaps.extend(begin - end for end, begin in zip(ends, starts[1:]))
            self.tails.append((time.perf_counter() - ends[-1]) / max(1, len(ends) - 1))
            return result
        return timed


def method_of(name: str) -> tuple[str, dict]:
    """A bench method's Mitigate method and the parameters it adds to the tab's (see VARIANTS)."""
    return VARIANTS.get(name, (name, {}))


def measure_decoding(session: ModelSession, request: ProbeRequest, timer: Timer,
                     methods: tuple[str, ...] = METHODS) -> dict[str, Decoding]:
    """Each Mitigate method (of ``methods``; greedy always) through ``session.generate`` with the
    tab's default settings, and plain ``model.generate`` ("plain") on the same inputs with no
    studio hooks, each decoding ``request.max_new_tokens`` tokens; interleaved in rounds
    (:meth:`Timer.measure_each`, plain right after greedy), so that the two are measured alike, after one untimed
    short generate (the first call after building ran a fifth to a half slower, which fell on
    whichever method came first)."""
    prepared = session.prepare(request.image, request.prompt)
    names = list(dict.fromkeys(("greedy", *methods)))
    tab = method_settings(list(dict.fromkeys(method_of(m)[0] for m in names)), sid_layer=sid_layer(session),
                          **MITIGATE_DEFAULTS)
    strategies = {m: strategy_by_name(base, **{**tab[base], **extra}) for m in names for base, extra in [method_of(m)]}
    tokens = request.max_new_tokens

    def plain() -> torch.Tensor:  # no min_new_tokens: its logits processor is work the session does not do
        with torch.inference_mode():
            return session.model.generate(**prepared.inputs, max_new_tokens=tokens,
                                          do_sample=False, eos_token_id=session.eos_ids,
                                          pad_token_id=session.tokenizer.pad_token_id)
    decode = {name: (lambda s=strategy: session.generate(prepared, max_new_tokens=tokens, strategy=s))
              for name, strategy in strategies.items()}
    # plain next to greedy, so each round's reversal (A B ... B A) keeps the two side by side
    calls: dict[str, Callable[[], object]] = {"greedy": decode.pop("greedy"), "plain": plain, "plain again": plain,
                                              **decode}
    with torch.inference_mode():  # untimed: a model's first generate pays one-off costs (here up to 1.5x)
        session.model.generate(**prepared.inputs, max_new_tokens=2, do_sample=False,
                               pad_token_id=session.tokenizer.pad_token_id)
    clocks = {name: StepClock(session.model) for name in calls}
    costs = timer.measure_each({name: clocks[name].time(call) for name, call in calls.items()})
    if timer.repeats > 1:  # the 1.02x comparison needs more steps than a method's (see Decoding)
        Timer(PAIR_ROUNDS, float("inf")).measure_each({name: clocks[name].time(calls[name]) for name in PAIR})
    return {name: Decoding(cost, statistics.median(clocks[name].prompts), step_quantile(clocks[name].steps),
                           statistics.median(clocks[name].gaps or [0.0]) + statistics.median(clocks[name].tails))
            for name, cost in costs.items()}


def step_quantile(steps: list[float]) -> float:
    """The :data:`STEP_QUANTILE` quantile of ``steps`` (see :class:`Decoding`); one step: itself."""
    ordered = sorted(steps)
    return ordered[min(len(ordered) - 1, int(STEP_QUANTILE * len(ordered)))]


def two_row_cost(session: ModelSession, calls: int = 20) -> Row:
    """What a second batch row costs this machine's kernel: ``F.linear`` of the first decoder
    layer's largest weight on 2 rows against 1 row (median of ``calls``). A contrastive
    method decodes two rows per step, so its per-token ratio to greedy cannot fall below this."""
    linears = [m for m in session.adapter.decoder_layers()[0].modules() if isinstance(m, torch.nn.Linear)]
    weight = max(linears, key=lambda m: m.weight.numel()).weight
    seconds = {}
    with torch.inference_mode():
        for rows in (1, 2):
            x = torch.randn(rows, weight.shape[1], dtype=weight.dtype)
            torch.nn.functional.linear(x, weight)
            times = []
            for _ in range(calls):
                start = time.perf_counter()
                torch.nn.functional.linear(x, weight)
                times.append(time.perf_counter() - start)
            seconds[rows] = statistics.median(times)
    return Row(ROW_TWO_ROWS, seconds[2] * 1e3, "ms", seconds[2] / seconds[1], "1 row",
               0, calls)


def sliced_unembedding_cost(session: ModelSession, length: int, calls: int = 3) -> Row:
    """What one row's prompt pass pays in the unembedding: ``F.linear`` of the last position
    sliced from [1, ``length``, d], as generation hands it (it keeps the stride of ``length``),
    against the same values in a fresh tensor (median of ``calls``). Greedy decoding, like plain
    ``model.generate``, pays the first; the studio's hooked passes (several rows, reads) the second."""
    weight = session.adapter.unembedding().weight
    states = torch.randn(1, length, weight.shape[1], dtype=weight.dtype)
    inputs = {"sliced": states[:, -1:, :], "fresh": states[:, -1:, :].clone(memory_format=torch.contiguous_format)}
    seconds = {}
    with torch.inference_mode():
        for name, x in inputs.items():
            times = []
            for _ in range(calls + 1):  # the first call untimed
                start = time.perf_counter()
                torch.nn.functional.linear(x, weight)
                times.append(time.perf_counter() - start)
            seconds[name] = statistics.median(times[1:])
    return Row(ROW_SLICED, seconds["sliced"] * 1e3, "ms", seconds["sliced"] / seconds["fresh"], "fresh", 0, calls)


def decoding_rows(decoded: dict[str, Decoding]) -> list[Row]:
    """Each method's prompt pass and per-token cost against greedy's; greedy's against plain ``model.generate``."""
    greedy, plain, again = decoded["greedy"], decoded["plain"], decoded["plain again"]
    rows = []
    for name, d in decoded.items():
        if name in ("plain", "plain again"):
            continue
        rows.append(Row(f"Mitigate: {name}: {PROMPT_PASS}", d.prompt, "s", d.prompt / greedy.prompt, "greedy",
                        d.cost.peak_bytes, d.cost.samples))
        rows.append(Row(f"Mitigate: {name}: {PER_TOKEN}", d.per_token * 1e3, "ms/token", d.per_token / greedy.per_token,
                        "greedy", d.cost.peak_bytes, d.cost.samples))
    return rows + [Row(ROW_SESSION_PROMPT, greedy.prompt, "s", greedy.prompt / plain.prompt, "model.generate",
                       greedy.cost.peak_bytes, greedy.cost.samples),
                   Row(ROW_SESSION, greedy.per_token * 1e3, "ms/token", greedy.per_token / plain.per_token,
                       "model.generate", greedy.cost.peak_bytes, greedy.cost.samples),
                   Row(ROW_PLAIN_GENERATE, plain.per_token * 1e3, "ms/token", 1.0, "model.generate",
                       plain.cost.peak_bytes, plain.cost.samples),
                   Row(ROW_PLAIN_AGAIN, again.per_token * 1e3, "ms/token", again.per_token / plain.per_token,
                       "model.generate", again.cost.peak_bytes, again.cost.samples),
                   Row(ROW_BETWEEN, greedy.between * 1e3, "ms/token",
                       (plain.per_token + greedy.between - plain.between) / plain.per_token, "model.generate",
                       greedy.cost.peak_bytes, greedy.cost.samples)]


def table_rows(forward: Cost, run: Cost, probes: dict[str, Cost], views: dict[str, Cost], attribution: Cost,
               decoded: dict[str, Decoding]) -> list[Row]:
    """The rows of :data:`ROWS`, in order. A press's peak is its largest step's (steps run one after
    another and keep small results)."""
    def per_call(label: str, cost: Cost) -> Row:
        return Row(label, cost.seconds, "s", cost.seconds / forward.seconds, "forward", cost.peak_bytes, cost.samples,
                   cost.estimated)

    press = Cost(sum(c.seconds for c in probes.values()), min(c.samples for c in probes.values()),
                 max(c.peak_bytes for c in probes.values()))
    fresh = Cost(press.seconds + run.seconds, min(press.samples, run.samples), max(press.peak_bytes, run.peak_bytes))
    return [per_call(ROW_FORWARD, forward), per_call(ROW_RUN, run),
            *(per_call(f"Inspect: {name}", cost) for name, cost in probes.items()),
            per_call(ROW_PRESS, press), per_call(ROW_FRESH, fresh),
            *(per_call(label, cost) for label, cost in views.items()), per_call(ROW_ATTRIBUTION, attribution),
            *decoding_rows(decoded)]


def bench_decoding(shape: dict, timer: Timer, tokens: int, methods: tuple[str, ...] = METHODS,
                   quick: bool = False) -> None:
    """Only the decoding rows of ``shape`` (the Mitigate ``methods`` and plain ``model.generate``),
    printed: a shorter run for when the full table's other steps are already measured."""
    built = build(shape, quick)
    request = ProbeRequest(sample_image(*shape["image_size"], seed=SEED), PROMPT, tokens)
    print(f"\n== {shape['name']}: decoding only, {tokens} tokens, {built.parameters / 1e6:,.0f} M parameters, "
          f"{shape['dtype']}")
    decoded = measure_decoding(built.session, request, timer, methods)
    length = built.session.prepare(request.image, request.prompt).length
    for row in [*decoding_rows(decoded), two_row_cost(built.session), sliced_unembedding_cost(built.session, length)]:
        print(f"   {row.label:<40}{_number(row.value) + ' ' + row.unit:>16}  {_number(row.ratio)} x {row.basis}"
              f"{row.peak_bytes / 2**20:>10.0f} MiB{row.samples:>4}")


def plain_forward(session: ModelSession, inputs: dict) -> None:
    """One plain forward of the model over ``inputs``, no studio call around it: the basis of every ratio."""
    with torch.inference_mode():
        session.model(**inputs)


def bench_attribution(shape: dict, timer: Timer, quick: bool = False) -> None:
    """Only the attribution estimate of ``shape`` against one plain forward, printed: a shorter
    run for when the full table's other steps are already measured."""
    built = build(shape, quick)
    session = built.session
    request = ProbeRequest(sample_image(*shape["image_size"], seed=SEED), PROMPT, NEW_TOKENS)
    run = checked_run(shape, compute_run(session, request), request)
    inputs = session.extend_inputs(run.prepared.inputs, run.token_map.input_ids[run.prepared.length:])

    forward, _ = timer.measure(lambda: plain_forward(session, inputs))
    plan = plan_attribution(session, run, timer)
    print(f"\n== {shape['name']}: attribution only, {built.parameters / 1e6:,.0f} M parameters "
          f"({built.weight_bytes / 2**30:.2f} GiB), {shape['dtype']}")
    print(f"   {ROW_FORWARD:<40}{forward.seconds:>14.4g} s  1 x forward{forward.peak_bytes / 2**20:>10.0f} MiB")
    print(f"   {ROW_ATTRIBUTION:<40}{plan.seconds:>14.4g} s  est. {plan.seconds / forward.seconds:.3g} x forward"
          f"{plan.peak_bytes / 2**20:>10.0f} MiB")
    print(f"   attribution: {plan.summary()}")


def bench_shape(shape: dict, quick: bool, timer: Timer, attribution_budget: float) -> ShapeReport:
    """Build ``shape`` and measure every row of its table (see the module docstring)."""
    built = build(shape, quick)
    session = built.session
    image = sample_image(*shape["image_size"], seed=SEED)
    request = ProbeRequest(image, PROMPT, QUICK_NEW_TOKENS if quick else NEW_TOKENS)
    run_cost, run = timer.measure(lambda: compute_run(session, request))
    cache_for(session).put(request_key(request), checked_run(shape, run, request))  # what an Inspect press reads
    answer = run.token_map.input_ids[run.prepared.length:]
    inputs = session.extend_inputs(run.prepared.inputs, answer)

    forward, _ = timer.measure(lambda: plain_forward(session, inputs))
    probes = {name: timer.measure(lambda name=name: run_probe(session, name, request)) for name in INSPECT_PROBES}
    state = Inspection(image=np.asarray(load_image(image)), lens=probes["logit_lens"][1],
                       attention=probes["attention"][1], detector=probes["detector"][1], drift=probes["drift"][1],
                       request=request)
    views = measure_views(state, timer)
    decoded = measure_decoding(session, request, timer)
    plan = plan_attribution(session, run, timer)
    attribution = Cost(plan.seconds, 1, plan.peak_bytes, estimated=True)
    if plan.seconds <= attribution_budget:
        attribution = Timer(1, 0.0).measure(lambda: run_probe(session, "attribution", request))[0]
    return ShapeReport(
        name=shape["name"], source=shape["source"], dtype=shape["dtype"], decoder_layers=built.decoder_layers,
        vision_layers=built.vision_layers, parameters=built.parameters, weight_bytes=built.weight_bytes,
        build_seconds=built.seconds, image_size=shape["image_size"], image_tokens=len(run.token_map.image_positions),
        prompt_tokens=run.prepared.length, answer_tokens=len(answer),
        rows=[*table_rows(forward, run_cost, {name: cost for name, (cost, _) in probes.items()}, views, attribution,
                          decoded), two_row_cost(session), sliced_unembedding_cost(session, run.prepared.length)],
        attribution={"evaluations": plan.evaluations, "reused_evaluations": plan.reused_evaluations,
                     "ig_steps": plan.ig_steps, "summary": plan.summary(),
                     "forward_seconds": plan.forward.seconds, "reused_seconds": plan.reused.seconds,
                     "pixel_step_seconds": plan.pixel_step.seconds,
                     "embedding_step_seconds": plan.embedding_step.seconds, "predicted_seconds": plan.seconds,
                     "ran": not attribution.estimated})


def machine() -> dict:
    """The machine and libraries the numbers come from (a loaded machine shifts every time)."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "torch_threads": torch.get_num_threads(), "memory_bytes": _meminfo("MemTotal:"),
            "available_bytes": _meminfo("MemAvailable:"), "load_average": list(os.getloadavg()),
            "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}


def _meminfo(field_name: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field_name):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field_name} not in /proc/meminfo")


def print_machine(info: dict) -> None:
    print(f"machine: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), "
          f"torch threads {info['torch_threads']}, {info['memory_bytes'] / 2**30:.1f} GiB "
          f"({info['available_bytes'] / 2**30:.1f} available), load average "
          f"{' '.join(f'{x:.2f}' for x in info['load_average'])}")
    print(f"python {info['python']}, torch {info['torch']}, transformers {info['transformers']}")


def _number(value: float) -> str:
    """A readable number without exponent: thousands separated, three significant digits below 1."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return np.format_float_positional(value, precision=3, unique=False, fractional=False)


def print_report(report: ShapeReport, quick: bool) -> None:
    """One shape's table; ratios read "x forward" (one plain forward of this run), "x greedy" or
    "x model.generate"; "est." marks an estimate."""
    (layers, published), (vision, vision_published) = report.decoder_layers, report.vision_layers
    print(f"\n== {report.name}{' (quick)' if quick else ''}: {report.source}")
    print(f"   built {layers} of {published} decoder layers, {vision} of {vision_published} vision layers, "
          f"{report.dtype}, {report.parameters / 1e6:,.0f} M parameters ({report.weight_bytes / 2**30:.2f} GiB) "
          f"in {report.build_seconds:.1f} s; image {report.image_size[0]}x{report.image_size[1]} -> "
          f"{report.image_tokens} image tokens, prompt {report.prompt_tokens} + answer {report.answer_tokens} tokens")
    print(f"   {'step':<40}{'time':>16}  {'ratio':<24}{'peak extra':>12}{'n':>4}")
    for row in report.rows:
        value = f"{_number(row.value)} {row.unit}"
        ratio = f"{'est. ' if row.estimated else ''}{_number(row.ratio)} x {row.basis}"
        print(f"   {row.label:<40}{value:>16}  {ratio:<24}{row.peak_bytes / 2**20:>8.0f} MiB{row.samples:>4}")
    plan = report.attribution
    print(f"   attribution: {plan['summary']} = {plan['predicted_seconds']:.4g} s"
          f"{'' if plan['ran'] else ' (estimated, not run)'}")


def main(argv: list[str] | None = None) -> list[ShapeReport]:
    """Parse the options, bench each shape in turn (printing its table as soon as it is done and
    saving the JSON after each shape, so a long run keeps what it finished), return the reports."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated names from bench/shapes/")
    parser.add_argument("--repeats", type=int, default=None,
                        help="calls per step, median taken; a decoding step's cost is the tenth percentile of "
                             "every step of every call (default 3; quick 1)")
    parser.add_argument("--budget", type=float, default=60.0,
                        help="seconds a step's repeats may take; a slower step is called once (default 60)")
    parser.add_argument("--attribution-budget", type=float, default=None,
                        help="run attribution when its estimate is below this many seconds, else report the estimate "
                             "(default 900; quick 0, always estimated)")
    parser.add_argument("--quick", action="store_true", help="2 decoder and 2 vision layers, 4 answer tokens: a smoke test")
    parser.add_argument("--json", type=Path, help="save the numbers here")
    parser.add_argument("--decoding-only", type=int, metavar="TOKENS",
                        help="measure only the decoding rows, decoding this many tokens (a shorter run)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"with --decoding-only: these Mitigate methods (default {','.join(METHODS)}; greedy always)")
    parser.add_argument("--attribution-only", action="store_true",
                        help="measure only the attribution estimate (with its steps' peaks) against one forward")
    parser.add_argument("--dtype", choices=sorted(DTYPES),
                        help="build every shape in this dtype instead of its own (e.g. bfloat16, as on a GPU)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.shapes.split(",") if n.strip()]
    shapes = [{**load_shape(n), **({"dtype": args.dtype} if args.dtype else {})} for n in names]
    repeats = args.repeats if args.repeats is not None else 1 if args.quick else 3
    if repeats < 1:
        parser.error("--repeats must be at least 1")
    unknown = sorted(set(m.strip() for m in args.methods.split(",") if m.strip()) - set(METHODS))
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    timer = Timer(repeats, args.budget)
    attribution_budget = args.attribution_budget if args.attribution_budget is not None else 0 if args.quick else 900
    info = machine()
    print_machine(info)
    reports = []
    for shape in shapes:
        if args.decoding_only:
            bench_decoding(shape, timer, args.decoding_only, tuple(m.strip() for m in args.methods.split(",") if m.strip()),
                           args.quick)
            continue
        if args.attribution_only:
            bench_attribution(shape, timer, args.quick)
            release_memory()
            continue
        reports.append(bench_shape(shape, args.quick, timer, attribution_budget))
        print_report(reports[-1], args.quick)
        release_memory()
        if args.json:
            atomic_write_json(args.json, {"machine": info, "quick": args.quick, "repeats": repeats,
                                          "shapes": {r.name: asdict(r) for r in reports}})
    return reports


if __name__ == "__main__":
    main()
