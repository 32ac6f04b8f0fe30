"""ModelSession: one loaded VLM, its processor and adapter, and the ways the studio runs it.

``objects`` is the model's own object vocabulary when its folder ships one (``objects.json``;
the embedded world model lists its world's kinds), which the detector adds to its default.

A session prepares (image, prompt) pairs with the model's own processor and chat template
into inputs plus a :class:`TokenMap`; runs forward passes that can capture the residual
stream after every decoder layer; and generates with a pluggable decoding strategy
(:mod:`studio.decoding`). Model calls are serialised by a per-session lock, and every hook
is scoped to the request that added it (:mod:`studio.engine.hooks`).
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from jinja2 import TemplateError
from PIL import Image

from studio.adapters import Adapter, TokenMap, adapter_for
from studio.decoding import DecodeBatch, DecodingStrategy, Greedy
from studio.engine.attention_reads import QueryKeyLog
from studio.engine.errors import InputError, ResourceError, StudioError
from studio.engine.features import image_features_reused, images_encoded_once
from studio.engine.hooks import HookSpec, scoped_hooks
from studio.engine.images import ImageLike, load_image
from studio.engine.loading import LoadedModel, load_model
from studio.engine.prefix import decode_with_shared_prefix
from studio.engine.recompute import Recompute, recomputing
from studio.engine.zerogpu import on_gpu
from studio.interventions import Intervention, intervene, read

MAX_PROMPT_CHARS = 4000
MAX_NEW_TOKENS = 512
T = TypeVar("T")


@dataclass
class Prepared:
    """Model inputs for one (image, prompt) pair, with the token map and the checked image."""

    inputs: dict
    token_map: TokenMap
    image: Image.Image | None
    prompt: str

    @property
    def length(self) -> int:
        return len(self.token_map)


@dataclass
class TokenChoice:
    """One generated token: its id and text, its probability under the distribution that chose it
    (after the decoding method's processors and the sampling warpers: for greedy the model's own),
    the top alternatives under that distribution, and for methods that change the scores the
    model's own (expert) probability of it, ``expert_prob``."""

    id: int
    text: str
    prob: float
    top: list[tuple[str, float]]
    expert_prob: float | None = None


@dataclass
class Generation:
    """A generated answer: the chosen tokens and the full sequence (prompt + answer) ids."""

    prompt: Prepared
    tokens: list[TokenChoice]
    sequence: list[int]
    strategy: str
    trace: dict = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "".join(t.text for t in self.tokens).strip()


@dataclass
class GenerationRead:
    """A greedy answer read in the pass that decoded it: ``hidden`` [L, S, d] every decoder
    layer's output state at every position (prompt + answer), ``answer_logits`` [A, V] the scores
    that chose each answer token, ``attention`` each layer's queries and keys (row 0)."""

    generation: Generation
    hidden: torch.Tensor
    answer_logits: torch.Tensor
    attention: list[QueryKeyLog]


@dataclass
class ForwardResult:
    """Logits [seq, vocab] of one pass and, when captured, residual states [layers, seq, d]."""

    logits: torch.Tensor
    hidden: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)


class ModelSession:
    """One model ready for probing; build with :meth:`load` (or from a model and processor).

    ``lock`` serialises model calls; ``text_lock`` serialises tokenizer and processor calls: a fast
    tokenizer sets its padding on the shared Rust object at every call (transformers #47085), so
    a padded batch encoded while another request encodes one prompt could lose its padding.
    """

    def __init__(self, model, processor, source: str = "in-memory", device: str | None = None,
                 objects: tuple[str, ...] = ()) -> None:
        self.model: Any = model.eval().requires_grad_(False)
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.adapter: Adapter = adapter_for(model, processor)
        self.source = source
        self.device = torch.device(device) if device else next(model.parameters()).device
        self.lock = threading.RLock()
        self.text_lock = threading.Lock()
        self.objects = tuple(objects)

    @classmethod
    def load(cls, source: str | None = None, **options) -> "ModelSession":
        """Load the embedded model (``source`` None), a local folder, or a Hub id.

        Options: ``device`` ("auto", "cuda", "mps", "cpu"), ``dtype`` ("auto", "bf16",
        "fp16", "fp32"), ``attn_implementation`` ("sdpa" or "eager"), ``trust_remote_code``
        (off unless asked), ``offline`` (default: the HF_HUB_OFFLINE setting), ``device_map``
        and ``max_memory`` (split the model with accelerate: :mod:`studio.engine.placement`).
        """
        loaded: LoadedModel = load_model(source, **options)
        return cls(loaded.model, loaded.processor, source=loaded.source, device=loaded.device, objects=loaded.objects)

    @property
    def n_layers(self) -> int:
        return len(self.adapter.decoder_layers())

    @property
    def vocab(self) -> list[str]:
        return [self.tokenizer.convert_ids_to_tokens(i) for i in range(self.adapter.unembedding().out_features)]

    def prepare(self, image: ImageLike | None, prompt: str) -> Prepared:
        """Inputs for ``prompt`` about ``image`` (None for a text-only prompt), via the chat template."""
        prompt = self.check_prompt(prompt)
        if image is None and self.requires_image:
            raise InputError(f"this model ({self.adapter.family}) answers only with an image: give one")
        picture = load_image(image) if image is not None else None
        content = ([{"type": "image"}] if picture is not None else []) + [{"type": "text", "text": prompt}]
        text = self._chat_text(content, prompt, picture is not None)
        kwargs = {"images": [picture]} if picture is not None else {}
        inputs = self._process([picture] if picture is not None else [], text=[text], return_tensors="pt", **kwargs)
        inputs = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in inputs.items()}
        if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        token_map = self.token_map(inputs, picture)
        limit = self._max_positions()
        if limit and len(token_map) + 1 > limit:
            raise InputError(f"the prompt and image take {len(token_map)} tokens; this model reads at most {limit}")
        return Prepared(inputs=inputs, token_map=token_map, image=picture, prompt=prompt)

    def check_prompt(self, prompt: str) -> str:
        """:func:`check_prompt`, and a refusal when the prompt types one of this model's special
        tokens (``<image>``, ``<|image_pad|>``, ``[IMG]`` ...): typed, they would become image slots
        or turn markers the processor did not place."""
        prompt = check_prompt(prompt)
        found = [t for t in self.special_tokens if t in prompt]
        if found:
            raise InputError(f"the prompt contains the special token {found[0]!r} of this model; the studio places "
                             "image and turn tokens itself: remove it from the prompt")
        return prompt

    @functools.cached_property
    def requires_image(self) -> bool:
        """Whether the model cannot answer without pixels: its forward needs them (InstructBLIP)
        or its processor refuses a text without an image (PaliGemma)."""
        parameter = inspect.signature(self.model.forward).parameters.get("pixel_values")
        if parameter is not None and parameter.default is inspect.Parameter.empty:
            return True
        try:
            with self.text_lock:
                self.processor(text=["a"], return_tensors="pt")
        except (ValueError, TypeError):
            return True
        return False

    @functools.cached_property
    def special_tokens(self) -> tuple[str, ...]:
        """Every special or added token string of the tokenizer and processor (longest first)."""
        tokens = set(getattr(self.tokenizer, "all_special_tokens", []))
        tokens |= {str(t) for t in getattr(self.tokenizer, "added_tokens_decoder", {}).values()}
        tokens |= {v for k, v in vars(self.processor).items() if k.endswith("_token") and isinstance(v, str)}
        return tuple(sorted((t for t in tokens if len(t.strip()) > 1), key=len, reverse=True))

    def _process(self, pictures: list, **kwargs) -> Any:
        """The processor's output, with its refusals of an image it cannot lay out (extreme aspect
        ratios, sizes its resize rules reject) turned into one clear InputError."""
        text = kwargs.get("text") or []
        bos = getattr(self.tokenizer, "bos_token", None)
        if bos and text and all(t.startswith(bos) for t in text):
            kwargs["add_special_tokens"] = False  # the chat template wrote the one <bos>
        try:
            with self.text_lock:
                out = self.processor(**kwargs)
        except (ValueError, RuntimeError, IndexError, ZeroDivisionError) as err:
            sizes = ", ".join(f"{i.size[0]}x{i.size[1]}" for i in pictures) or "no"
            first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            raise InputError(f"this model's processor cannot prepare the prompt with {sizes} image(s): {first}") from None
        out.pop("labels", None)  # PaliGemma's processor adds training labels; the studio never trains on them
        return out

    def _chat_text(self, content: list, prompt: str, has_image: bool, system: str | None = None) -> str:
        """The model's chat template around the prompt (after a system turn holding ``system`` when
        given: check :attr:`has_system_turn` first); without a template, the prompt as it is for
        processors that place image tokens themselves (PaliGemma, InstructBLIP), else after the
        image token."""
        if getattr(self.processor, "chat_template", None):
            turns = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
            return self.processor.apply_chat_template(
                [*turns, {"role": "user", "content": content}], add_generation_prompt=True)
        if not has_image or self._processor_places_images:
            return prompt
        image_token = getattr(self.processor, "image_token", "<image>")
        return f"{image_token}\n{prompt}"

    @functools.cached_property
    def has_system_turn(self) -> bool:
        """Whether the chat template writes a system turn it is given (ICD puts its disturbance there)."""
        marker = "studio-system-marker"
        if not getattr(self.processor, "chat_template", None):
            return False
        try:
            text = self._chat_text([{"type": "text", "text": "a"}], "a", False, system=marker)
        except (TemplateError, ValueError, KeyError, TypeError):
            return False
        return marker in text

    @functools.cached_property
    def _processor_places_images(self) -> bool:
        """Whether the processor itself puts image tokens into a text that has none."""
        try:
            with self.text_lock:
                ids = self.processor(text=["a"], images=[Image.new("RGB", (64, 64))], return_tensors="pt")["input_ids"]
        except (ValueError, RuntimeError, KeyError, TypeError):
            return False
        return bool((ids == self._image_token_id()).any())

    def _max_positions(self) -> int | None:
        text_config = getattr(self.model.config, "text_config", self.model.config)
        return getattr(text_config, "max_position_embeddings", None)

    def token_map(self, inputs: dict, image: Image.Image | None) -> TokenMap:
        """Token strings of every position, and the patch each image token covers."""
        ids = inputs["input_ids"][0].cpu()
        with self.text_lock:
            tokens = [self.tokenizer.decode([int(i)]) for i in ids]
        tmap = TokenMap(input_ids=ids.tolist(), tokens=tokens)
        if image is not None:
            tmap.image_size = image.size
            tmap.grids, tmap.image = self.adapter.image_layout(ids, tokens, inputs, image.size)
        return tmap

    def call(self, fn: Callable[[], T], interventions: Sequence[Intervention] = (), generating: bool = False,
             grad: bool = False, recompute: Recompute = None, reuse_image_features: bool = False,
             hook_free: bool = False) -> T:
        """Run ``fn`` (which calls the model) as one request: under the session lock, without
        autograd unless ``grad``, with ``interventions`` applied (``generating``: the first
        forward is the prompt pass, later ones generated steps) and out-of-memory turned into a
        :class:`ResourceError`; ``recompute``: the vision tower's layers ("vision") or every
        layer ("all") recompute their activations in the backward pass instead of keeping them
        (:mod:`studio.engine.recompute`; the model must then be called with ``use_cache=False``,
        or a decoder layer's replay would see its own keys twice); ``reuse_image_features``: a
        pixel tensor seen again is not encoded again (:mod:`studio.engine.features`). The
        unembedding gets its inputs with canonical strides (:func:`_canonical_input`; the same
        values, computed much faster in bfloat16 on a CPU) unless ``hook_free``: a call without
        interventions that must add no hook at all (greedy decoding with nothing applied, which
        is plain ``model.generate``). Every model call of the studio goes through here, so on ZeroGPU hardware
        this is where the call is handed to a ``spaces.GPU`` function (:func:`on_gpu`)."""
        adapter = self.adapter

        if recompute not in (None, "vision", "all"):
            raise StudioError(f"recompute must be None, 'vision' or 'all'; got {recompute!r}")

        layout = [] if hook_free else [HookSpec(adapter.unembedding(), _canonical_input, "pre")]
        if hook_free and interventions:
            raise StudioError("a hook-free call cannot apply interventions")

        def body() -> T:
            view_encoder = adapter.view_encoder() if recompute is not None else None
            with _oom_guard(), (torch.enable_grad() if grad else torch.inference_mode()), intervene(
                    self.model, adapter.decoder_layers(), adapter.attention_modules(), interventions,
                    generating, self._image_token_id()), \
                    recomputing(self.model, recompute, adapter.decoder_layers(), view_encoder), \
                    (image_features_reused(self.model) if reuse_image_features else nullcontext()), \
                    scoped_hooks(layout):
                return fn()
        with self.lock:
            return on_gpu(body)

    def _image_token_id(self) -> int | None:
        try:
            return self.adapter.image_token_id()
        except StudioError:
            return None

    def layer_outputs(self, inputs: dict, layers: list[int]) -> list[torch.Tensor]:
        """One pass over ``inputs`` (any batch); the output states [batch, seq, d] of each of
        the decoder ``layers``, in the order given."""
        kept: dict[int, torch.Tensor] = {}
        reads = [read("residual", i, functools.partial(kept.__setitem__, i)) for i in dict.fromkeys(layers)]
        self.call(lambda: self.model(**inputs), reads)
        return [kept[i].to(self.device) for i in layers]  # a split model's layers may sit on other devices

    @contextmanager
    def attention_implementation(self, name: str | None, text_only: bool = False) -> Iterator[None]:
        """Within the block, holding the session lock, attention runs ``name`` (e.g. "eager", so
        its weights exist), in the whole model or only its language model; each sub-model's own
        previous implementation is restored after, even on error. None changes nothing."""
        config = self.model.config
        with self.lock:
            previous = {"text_config": config.text_config._attn_implementation} if text_only else {
                "": config._attn_implementation,
                **{k: getattr(config, k)._attn_implementation for k in getattr(config, "sub_configs", {})
                   if getattr(config, k, None) is not None}}
            change = name is not None and any(v != name for v in previous.values())
            if change:
                self.model.set_attn_implementation({"text_config": name} if text_only else name)
            try:
                yield
            finally:
                if change:
                    self.model.set_attn_implementation(previous)

    def forward(self, prepared: Prepared, capture: bool = False, extra_ids: list[int] | None = None,
                interventions: Sequence[Intervention] = ()) -> ForwardResult:
        """One pass over the prompt (plus ``extra_ids`` appended, e.g. a generated answer), with
        ``interventions`` applied; ``capture`` keeps every layer's output state."""
        inputs = self.extend_inputs(prepared.inputs, extra_ids)
        states: dict[int, torch.Tensor] = {}
        reads = [read("residual", i, functools.partial(_keep_row0, states, i)) for i in range(self.n_layers)] \
            if capture else []
        logits = self.call(lambda: self.model(**inputs).logits[0].float(), [*interventions, *reads])
        hidden = torch.stack([states[i] for i in range(self.n_layers)]) if capture else None
        return ForwardResult(logits=logits, hidden=hidden)

    def last_states(self, prepared: Prepared) -> torch.Tensor:
        """Every decoder layer's output state at the last prompt position, [L, d], from one pass
        that projects only that position to the vocabulary (``logits_to_keep=1``: the
        [positions x vocabulary] logits of a plain pass are a large vocabulary's cost)."""
        kept: dict[int, torch.Tensor] = {}
        reads = [read("residual", i, functools.partial(_keep_last, kept, i)) for i in range(self.n_layers)]
        self.call(lambda: self.model(**prepared.inputs, logits_to_keep=1), reads)
        return torch.stack([kept[i].to(self.device) for i in range(self.n_layers)])

    def extend_inputs(self, inputs: dict, extra_ids: list[int] | None) -> dict:
        """``inputs`` with ``extra_ids`` (e.g. a generated answer) appended as the model's own
        generation would see them: attended, text, and of the family's answer token type."""
        if not extra_ids:
            return inputs
        extra = torch.tensor([extra_ids], dtype=inputs["input_ids"].dtype, device=self.device)
        out = dict(inputs)
        out["input_ids"] = torch.cat([inputs["input_ids"], extra], dim=1)
        if "attention_mask" in inputs:
            out["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(extra)], dim=1)
        if "mm_token_type_ids" in inputs:
            out["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(extra)], dim=1)
        if "token_type_ids" in inputs:
            answer_type = torch.full_like(extra, self.adapter.answer_token_type)
            out["token_type_ids"] = torch.cat([inputs["token_type_ids"], answer_type], dim=1)
        return out

    def generate(self, prepared: Prepared, max_new_tokens: int = 64, strategy: DecodingStrategy | None = None,
                 top_k: int = 5, interventions: Sequence[Intervention] = ()) -> Generation:
        """Decode an answer with ``strategy`` (greedy by default), with per-token probabilities,
        and ``interventions`` applied to the answer rows (e.g. steering).

        The strategy is the plug-in point for decoding-time methods: its batch may add contrast
        rows, its plan's logits processors see each step's scores and its interventions edit
        its rows.
        """
        check_new_tokens(max_new_tokens)
        strategy = strategy or Greedy()
        batch = strategy.batch(self, prepared)
        out, plan = self._decode(batch, strategy, max_new_tokens, interventions, output_logits=True)
        new_ids = out.sequences[0, batch.inputs["input_ids"].shape[1]:].tolist()
        eos = self.eos_ids
        # what each token was chosen from: the contrast (traced), the warped scores when generate
        # samples, else the logits themselves
        chosen = plan.trace.get("chosen") or [step[0] for step in (out.scores or out.logits)]
        tokens = [self._chosen(tid, scores, logits[0], top_k)
                  for tid, scores, logits in zip(new_ids, chosen, out.logits) if tid not in eos]
        return Generation(prompt=prepared, tokens=tokens, sequence=prepared.token_map.input_ids + new_ids,
                          strategy=strategy.name, trace=plan.trace)

    def read_generation(self, prepared: Prepared, max_new_tokens: int = 64, top_k: int = 5) -> GenerationRead:
        """The greedy answer and, read in that same pass, every decoder layer's output state and
        attention inputs at every position (prompt + answer), and the scores that chose each
        answer token.

        The states are those the answer was decoded from (no second forward); one step past
        ``max_new_tokens`` is decoded so that the last answer token is read as well."""
        check_new_tokens(max_new_tokens)
        states: list[list[torch.Tensor]] = [[] for _ in range(self.n_layers)]
        attention = [QueryKeyLog() for _ in range(self.n_layers)]
        reads = [read("residual", i, functools.partial(_append_row0, states[i])) for i in range(self.n_layers)]
        reads += [read("attention_inputs", i, log.add) for i, log in enumerate(attention)]
        strategy = Greedy()
        batch = strategy.batch(self, prepared)
        out, _ = self._decode(batch, strategy, max_new_tokens + 1, reads, output_logits=True)
        new_ids = out.sequences[0, prepared.length:].tolist()
        eos = self.eos_ids
        answer = list(itertools.takewhile(lambda t: t not in eos, new_ids))[:max_new_tokens]
        tokens = [self._choice(t, out.logits[i][0], top_k) for i, t in enumerate(answer)]
        length = prepared.length + len(answer)
        hidden = torch.stack([torch.cat(layer, dim=0)[:length].to(self.device) for layer in states])  # split models
        logits = torch.stack([out.logits[i][0].float() for i in range(len(answer))]) if answer else \
            torch.zeros(0, self.adapter.unembedding().out_features)
        generation = Generation(prompt=prepared, tokens=tokens, sequence=prepared.token_map.input_ids + answer,
                                strategy=strategy.name)
        return GenerationRead(generation, hidden, logits, attention)

    def batch_inputs(self, images: list[ImageLike], prompts: list[str],
                     systems: Sequence[str | None] | None = None, padding_side: str = "left") -> dict:
        """Model inputs for many (image, prompt) pairs, padded (left, for generation) into one batch;
        ``systems`` gives rows a system turn of their own (None: the template's default)."""
        systems = systems or [None] * len(prompts)
        texts = [self._chat_text([{"type": "image"}, {"type": "text", "text": self.check_prompt(p)}], p, True, system)
                 for p, system in zip(prompts, systems)]
        pictures = [load_image(i) for i in images]
        inputs = self._process(pictures, images=[[p] for p in pictures], text=texts, return_tensors="pt",
                               padding=True, padding_side=padding_side).to(self.device)
        if inputs["pixel_values"].is_floating_point():
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        return dict(inputs)

    def answer_batch(self, images: list[ImageLike], prompts: list[str], max_new_tokens: int = 32,
                     strategy: DecodingStrategy | None = None,
                     interventions: Sequence[Intervention] = ()) -> list[str]:
        """Answers for many (image, prompt) pairs decoded together (for evaluation)."""
        if len(images) != len(prompts) or not prompts:
            raise InputError(f"give one prompt per image (got {len(images)} images and {len(prompts)} prompts)")
        check_new_tokens(max_new_tokens)
        strategy = strategy or Greedy()
        batch = strategy.rows(self, images, prompts)
        shared = self._shared_prefix_answers(images, prompts, batch, strategy, interventions, max_new_tokens)
        if shared is not None:
            return [self.decode_answer(row) for row in shared]
        out, _ = self._decode(batch, strategy, max_new_tokens, interventions)
        return [self.decode_answer(row) for row in out[: batch.answers, batch.inputs["input_ids"].shape[1]:]]

    def _shared_prefix_answers(self, images: list[ImageLike], prompts: list[str], batch: DecodeBatch,
                               strategy: DecodingStrategy, interventions: Sequence[Intervention],
                               max_new_tokens: int) -> torch.Tensor | None:
        """The generated ids when the rows can share each image's prompt prefix
        (:mod:`studio.engine.prefix`: plain greedy, no intervention, a family whose adapter allows
        it, an image asked more than once); else None."""
        image_token = self._image_token_id()
        if interventions or not self.adapter.shares_prefix or image_token is None \
                or batch.answers != batch.inputs["input_ids"].shape[0] or strategy.do_sample:
            return None
        plan = strategy.plan(self, batch)
        if plan.processors or plan.interventions or plan.attention:
            return None

        def firsts(rows: list[int]) -> dict:
            return self.batch_inputs([images[r] for r in rows], [prompts[r] for r in rows], padding_side="right")
        return self.call(lambda: decode_with_shared_prefix(
            self.model, firsts, images, batch.inputs, image_token, self.tokenizer.pad_token_id,
            max_new_tokens=max_new_tokens, eos_token_id=self.eos_ids, pad_token_id=self.tokenizer.pad_token_id))

    def _decode(self, batch: DecodeBatch, strategy: DecodingStrategy, max_new_tokens: int,
                interventions: Sequence[Intervention], output_logits: bool = False):
        """``model.generate`` over ``batch`` under ``strategy``'s plan; (output, plan). Rows that
        repeat other rows' images (SID's and ICD's amateurs) get them encoded once
        (:func:`studio.engine.features.images_encoded_once`)."""
        plan = strategy.plan(self, batch)
        if interventions and batch.inputs["input_ids"].shape[0] != batch.answers:
            rows = tuple(range(batch.answers))
            interventions = [dataclasses.replace(i, rows=i.rows or rows) for i in interventions]
        extra = {"return_dict_in_generate": True, "output_logits": True,
                 "output_scores": strategy.do_sample} if output_logits else {}  # scores differ from logits only then

        rows = batch.inputs["input_ids"].shape[0]

        def run():
            if strategy.seed is not None:
                torch.manual_seed(strategy.seed)
            inputs = images_encoded_once(self.model, batch.inputs) if rows > 1 else batch.inputs
            return self.model.generate(
                **inputs, max_new_tokens=max_new_tokens, do_sample=strategy.do_sample,
                logits_processor=plan.processors, eos_token_id=self.eos_ids,
                pad_token_id=self.tokenizer.pad_token_id, **extra, **_sampling_defaults(strategy))
        with self.attention_implementation(plan.attention, text_only=True):
            edits = [*plan.interventions, *interventions]
            return self.call(run, edits, generating=True, hook_free=rows == 1 and not edits), plan

    def decode_answer(self, ids) -> str:
        """Generated token ids as text, without special tokens."""
        with self.text_lock:
            return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    @property
    def eos_ids(self) -> list[int]:
        """Token ids that end an answer: the generation config's and tokenizer's end tokens, and the
        image placeholder (an answer that emits one has left text; re-reading it would splice
        image features where there are none)."""
        ids = self.model.generation_config.eos_token_id
        ids = list(ids) if isinstance(ids, list) else [ids] if ids is not None else []
        for extra in (self.tokenizer.eos_token_id, self._image_token_id()):
            if extra is not None and extra not in ids:
                ids.append(extra)
        return ids

    def _choice(self, token_id: int, logits: torch.Tensor, top_k: int) -> TokenChoice:
        probs = torch.softmax(logits.float(), dim=-1)
        values, indices = probs.topk(min(top_k, probs.numel()))
        return TokenChoice(id=token_id, text=self.decode_token(token_id), prob=float(probs[token_id]),
                           top=[(self.decode_token(int(i)), float(v)) for v, i in zip(values, indices)])

    def _chosen(self, token_id: int, scores: torch.Tensor, logits: torch.Tensor, top_k: int) -> TokenChoice:
        """A decoded token under the scores that chose it; the model's raw logits give ``expert_prob``
        when the two differ (a contrastive method, a sampling warper)."""
        choice = self._choice(token_id, scores, top_k)
        if not torch.equal(scores, logits):
            choice.expert_prob = float(torch.softmax(logits.float(), dim=-1)[token_id])
        return choice

    def decode_token(self, token_id: int) -> str:
        """A token as it reads inside running text (with its leading space where it has one)."""
        with self.text_lock:
            text = self.tokenizer.decode([token_id])
        piece = self.tokenizer.convert_ids_to_tokens(token_id)
        if isinstance(piece, str) and piece.startswith(("Ġ", "▁")):
            return text if text.startswith(" ") else " " + text
        return text if text.startswith(" ") or not _word_level(self.tokenizer) else " " + text


def _word_level(tokenizer) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and type(backend.model).__name__ == "WordLevel"


def _sampling_defaults(strategy: DecodingStrategy) -> dict:
    kwargs = strategy.generation_kwargs()
    if not strategy.do_sample:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    return kwargs


def check_prompt(prompt: str) -> str:
    """The prompt stripped, or an InputError when empty or longer than ``MAX_PROMPT_CHARS``."""
    if not isinstance(prompt, str):
        raise InputError(f"the prompt must be text, got {type(prompt).__name__}")
    prompt = prompt.strip()
    if not prompt:
        raise InputError("the prompt is empty: type a question or instruction")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InputError(f"the prompt has {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
    return prompt


def check_new_tokens(max_new_tokens: int) -> int:
    """``max_new_tokens`` if it is a whole number in 1..MAX_NEW_TOKENS, else an InputError."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) \
            or not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise InputError(f"max_new_tokens must be a whole number between 1 and {MAX_NEW_TOKENS}; "
                         f"got {max_new_tokens!r}")
    return max_new_tokens


def _canonical_input(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
    """The unembedding's input with the strides of a fresh tensor of its shape. The prompt pass
    hands it each row's last position, [B, 1, d] sliced from [B, L, d], which keeps the stride of
    L: for B > 1 it is not contiguous and torch's matmul multiplies by a copy of the weight
    expanded over the rows (at a 152k vocabulary in bfloat16: 467 MB copied per row, 3 s of a
    2-row prompt pass on 2 CPU cores); for B = 1 torch calls it contiguous, yet in bfloat16 on
    this CPU the product took 1.8 s to 2.4 s against 0.03 s with canonical strides. Same values."""
    value = args[0] if args else kwargs.get("input")
    if not isinstance(value, torch.Tensor) or value.stride() == torch.empty(value.shape, device="meta").stride():
        return None
    value = value.clone(memory_format=torch.contiguous_format)
    return ((value, *args[1:]), kwargs) if args else (args, {**kwargs, "input": value})


def _keep_row0(states: dict, layer: int, value: torch.Tensor) -> None:
    states[layer] = value[0].detach()


def _keep_last(states: dict, layer: int, value: torch.Tensor) -> None:
    states[layer] = value[0, -1].detach().clone()


def _append_row0(states: list, value: torch.Tensor) -> None:
    states.append(value[0].detach())


@contextmanager
def _oom_guard() -> Iterator[None]:
    """Turn an out-of-memory error into a ResourceError and free the cache, so the app stays up."""
    try:
        yield
    except torch.OutOfMemoryError:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise ResourceError("the device ran out of memory for this request; try a smaller image, "
                            "a shorter prompt, fewer new tokens, or a CPU session") from None
