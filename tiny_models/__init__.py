"""Tiny random-weight vision-language models with working processors, built entirely offline.

Tests and demos of the studio need real ``transformers`` model classes of every supported family,
with processors that expand image placeholders exactly as the model consumes them, without
downloading a checkpoint. Every model here has a 64-wide, 2-layer text model, a 32-wide, 2-layer
vision tower with 8-pixel patches, a word-level tokenizer of under 300 entries and a chat template,
so a forward pass takes milliseconds on a CPU.

Image placeholders per family (image sizes are width x height):

- ``llava``: every image is resized and cropped to 32x32, a 4x4 patch grid, 16 ``<image>`` tokens.
- ``llava_next``: a 32x32 base image (4x4 grid, 16 tokens) plus high-res 32x32 tiles laid out by
  the best of ``LLAVA_NEXT_PINPOINTS``; the tiles' features are joined into one grid, cropped of
  the padding that kept the aspect ratio and closed by one ``image_newline`` token per row. A
  32x32 image gets a 1x2 tile layout cropped to a 4x4 grid: 16 + 4*4 + 4 = 36 tokens; a 40x24
  image gets 1x2 tiles cropped to a 4x6 grid: 16 + 4*6 + 4 = 44 tokens; a 64x64 image 2x2 tiles,
  an 8x8 grid: 16 + 8*8 + 8 = 88 tokens.
- ``qwen2_vl`` / ``qwen2_5_vl``: the image is resized to multiples of 16 px holding between 16x16
  and 64x64 pixels; each 8 px patch is one row of ``pixel_values`` and each 2x2 block of patches
  one ``<|image_pad|>`` token. 32x32 gives ``image_grid_thw`` (1, 4, 4), 4 tokens in a 2x2 merged
  grid; 48x32 gives (1, 4, 6), 6 tokens in a 2x3 merged grid.
- ``idefics3`` / ``smolvlm``: the longest edge is scaled to 64 px, both sides are rounded up to
  multiples of 32 and the image is cut into 32x32 tiles plus a 32x32 global view; each tile is
  4x4 patches shuffled into 4 ``<image>`` tokens. A square image gives 2x2 tiles + global = 20
  tokens, a 2:1 wide image 1x2 tiles + global = 12, and ``do_image_splitting=False`` a single
  global view of 4 tokens.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)
from transformers import (
    BaseImageProcessor,
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
    Idefics3VisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
    LlavaProcessor,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    ProcessorMixin,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLTextConfig,
    Qwen2_5_VLVisionConfig,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
    Qwen2VLTextConfig,
    Qwen2VLVisionConfig,
    SmolVLMConfig,
    SmolVLMForConditionalGeneration,
    SmolVLMImageProcessorPil,
    SmolVLMVisionConfig,
)

from studio.engine.processors import (
    ImageOnlyProcessorMixin,
    Qwen2_5_VLImageOnlyProcessor,
    Qwen2VLImageOnlyProcessor,
)

FAMILIES: tuple[str, ...] = ("llava", "llava_next", "qwen2_vl", "qwen2_5_vl", "idefics3", "smolvlm", "gemma3",
                              "paligemma", "llava_onevision", "mistral3", "internvl", "qwen3_vl")

TEXT_HIDDEN, TEXT_MLP, TEXT_LAYERS, TEXT_HEADS = 64, 128, 2, 4
VISION_HIDDEN, VISION_MLP, VISION_LAYERS, VISION_HEADS = 32, 64, 2, 2
MAX_POSITIONS = 512
PATCH_SIZE = 8
CLIP_IMAGE_SIZE = 32
CLIP_CROP = {"height": CLIP_IMAGE_SIZE, "width": CLIP_IMAGE_SIZE}
LLAVA_NEXT_PINPOINTS = [[32, 64], [64, 32], [64, 64], [96, 32], [32, 96]]
QWEN_MERGE = 2
QWEN_MIN_PIXELS, QWEN_MAX_PIXELS = 16 * 16, 64 * 64
QWEN_MROPE_SECTION = [2, 3, 3]  # sums to head_dim / 2 = 64 / 4 / 2, in Qwen's 1 : 1.5 : 1.5 ratio
IDEFICS_TILE, IDEFICS_LONGEST_EDGE, IDEFICS_SCALE = 32, 64, 2
IDEFICS_MAX_GRID = 6  # <row_i_col_j> tokens for tile grids up to 6x6, i.e. size longest_edge up to 192

WORDS = tuple(
    "user assistant system what which where who why how many much is are was be this that these those "
    "it its there here a an the of in on at to from and or with without not no yes do does can "
    "image picture photo describe show see look color colour shape size left right top bottom middle "
    "center above below behind front next big small large little red green blue yellow orange purple "
    "black white gray grey brown pink circle square triangle star line dot cat dog car tree house person "
    "man woman sky water one two three four five six seven eight nine ten zero".split()
) + tuple(".,?!:;'\"()-/") + tuple("0123456789")


@dataclass(frozen=True)
class ChatFormat:
    """How a family's chat template renders a conversation.

    ``turns`` maps a role to the text opening and closing its turn; an image content item becomes
    ``image``; ``generation`` opens the assistant turn the model is asked to write.
    """

    bos: str
    turns: dict[str, tuple[str, str]]
    image: str
    generation: str


@dataclass(frozen=True)
class TokenSpec:
    """A family's special tokens; ``add_bos`` makes the tokenizer itself prepend ``bos``."""

    bos: str
    eos: str
    pad: str
    unk: str
    image: str
    extras: tuple[str, ...]
    add_bos: bool


def chat_template(fmt: ChatFormat) -> str:
    """A Jinja chat template for ``fmt``; the format's strings are embedded as JSON literals."""
    return (
        "{%- set turns = " + json.dumps(fmt.turns) + " -%}"
        "{{- " + json.dumps(fmt.bos) + " -}}"
        "{%- for message in messages -%}"
        "{{- turns[message['role']][0] -}}"
        "{%- if message['content'] is string -%}{{- message['content'] -}}"
        "{%- else -%}{%- for item in message['content'] -%}"
        "{%- if item['type'] == 'image' -%}{{- " + json.dumps(fmt.image) + " -}}"
        "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}{%- endif -%}"
        "{%- endfor -%}{%- endif -%}"
        "{{- turns[message['role']][1] -}}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- " + json.dumps(fmt.generation) + " -}}{%- endif -%}"
    )


def build_tokenizer(spec: TokenSpec, template: str, image_attribute: bool = True) -> PreTrainedTokenizerFast:
    """A lower-casing word-level tokenizer over ``WORDS`` and the family's special tokens.

    Special tokens are matched before normalisation and splitting, so placeholders such as
    ``<row_1_col_2>`` stay one token; any other unknown word becomes ``spec.unk``. The image
    token is also the tokenizer's ``image_token`` attribute unless ``image_attribute`` is False
    (processors such as InstructBLIP's add their own).
    """
    specials = list(dict.fromkeys((spec.pad, spec.unk, spec.bos, spec.eos, spec.image, *spec.extras)))
    vocab = {token: i for i, token in enumerate(specials + list(WORDS))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=spec.unk))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    if spec.add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{spec.bos} $A", pair=f"{spec.bos} $A $B", special_tokens=[(spec.bos, vocab[spec.bos])])
    tok.add_special_tokens(specials)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=spec.bos, eos_token=spec.eos, unk_token=spec.unk, pad_token=spec.pad,
        extra_special_tokens={"image_token": spec.image} if image_attribute else {}, padding_side="left",
        model_max_length=MAX_POSITIONS, chat_template=template or None)


def token_ids(tokenizer: PreTrainedTokenizerFast) -> dict[str, int]:
    """The bos/eos/pad ids that every text config and generation config of a family shares."""
    return {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id}


def llama_config(tokenizer: PreTrainedTokenizerFast, kv_heads: int) -> LlamaConfig:
    """The tiny Llama text model behind the LLaVA and Idefics3/SmolVLM families."""
    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=TEXT_HIDDEN, intermediate_size=TEXT_MLP,
        num_hidden_layers=TEXT_LAYERS, num_attention_heads=TEXT_HEADS, num_key_value_heads=kv_heads,
        max_position_embeddings=MAX_POSITIONS, **token_ids(tokenizer))


def clip_vision_config() -> CLIPVisionConfig:
    """A CLIP tower over 32x32 images in 8 px patches: 16 patches plus CLS."""
    return CLIPVisionConfig(
        hidden_size=VISION_HIDDEN, intermediate_size=VISION_MLP, num_hidden_layers=VISION_LAYERS,
        num_attention_heads=VISION_HEADS, image_size=CLIP_IMAGE_SIZE, patch_size=PATCH_SIZE,
        projection_dim=VISION_HIDDEN)


LLAVA_TOKENS = TokenSpec(bos="<s>", eos="</s>", pad="<pad>", unk="<unk>", image="<image>", extras=(), add_bos=True)
LLAVA_CHAT = ChatFormat(
    bos="", image="<image>\n", generation="ASSISTANT:",
    turns={"system": ("", " "), "user": ("USER: ", " "), "assistant": ("ASSISTANT: ", "</s>")})


def llava_processor(processor_class: type[ProcessorMixin], image_processor: BaseImageProcessor) -> ProcessorMixin:
    """A LLaVA-style processor: CLS counted by the tower and dropped by the "default" strategy."""
    template = chat_template(LLAVA_CHAT)
    return processor_class(
        image_processor=image_processor, tokenizer=build_tokenizer(LLAVA_TOKENS, template), patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default", num_additional_image_tokens=1, chat_template=template,
        image_token=LLAVA_TOKENS.image)


def llava_config_kwargs(tokenizer: PreTrainedTokenizerFast) -> dict:
    """Config arguments shared by LLaVA and LLaVA-NeXT: CLIP tower, MHA Llama, last-layer patches."""
    return {"vision_config": clip_vision_config(), "text_config": llama_config(tokenizer, kv_heads=TEXT_HEADS),
            "image_token_index": tokenizer.image_token_id,
            "image_seq_length": (CLIP_IMAGE_SIZE // PATCH_SIZE) ** 2,
            "vision_feature_select_strategy": "default", "vision_feature_layer": -1}


def llava() -> tuple[PretrainedConfig, type[PreTrainedModel], ProcessorMixin]:
    """LLaVA-1.5: every image resized and cropped to 32x32, 16 image tokens."""
    processor = llava_processor(
        LlavaProcessor, CLIPImageProcessorPil(size={"shortest_edge": CLIP_IMAGE_SIZE}, crop_size=CLIP_CROP))
    return LlavaConfig(**llava_config_kwargs(processor.tokenizer)), LlavaForConditionalGeneration, processor


def llava_next() -> tuple[PretrainedConfig, type[PreTrainedModel], ProcessorMixin]:
    """LLaVA-NeXT: a 32x32 base view plus anyres tiles chosen from ``LLAVA_NEXT_PINPOINTS``."""
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": CLIP_IMAGE_SIZE}, crop_size=CLIP_CROP, image_grid_pinpoints=LLAVA_NEXT_PINPOINTS)
    processor = llava_processor(LlavaNextProcessor, image_processor)
    config = LlavaNextConfig(
        **llava_config_kwargs(processor.tokenizer), image_grid_pinpoints=LLAVA_NEXT_PINPOINTS)
    return config, LlavaNextForConditionalGeneration, processor


QWEN_TOKENS = TokenSpec(
    bos="<|endoftext|>", eos="<|im_end|>", pad="<|endoftext|>", unk="<unk>", image="<|image_pad|>",
    extras=("<|im_start|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|video_pad|>"),
    add_bos=False)
QWEN_CHAT = ChatFormat(
    bos="", image="<|vision_start|><|image_pad|><|vision_end|>", generation="<|im_start|>assistant\n",
    turns={role: (f"<|im_start|>{role}\n", "<|im_end|>\n") for role in ("system", "user", "assistant")})


def qwen_processor(processor_class: type[ImageOnlyProcessorMixin]) -> ProcessorMixin:
    """An image-only Qwen-VL processor: 8 px patches merged 2x2, images of 16x16 to 64x64 pixels."""
    template = chat_template(QWEN_CHAT)
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": QWEN_MIN_PIXELS, "longest_edge": QWEN_MAX_PIXELS}, patch_size=PATCH_SIZE,
        temporal_patch_size=2, merge_size=QWEN_MERGE)
    return processor_class(
        image_processor=image_processor, tokenizer=build_tokenizer(QWEN_TOKENS, template), chat_template=template)


def qwen_text_kwargs(tokenizer: PreTrainedTokenizerFast) -> dict:
    """Text config arguments shared by both Qwen-VL families: GQA and M-RoPE."""
    return {
        "vocab_size": len(tokenizer), "hidden_size": TEXT_HIDDEN, "intermediate_size": TEXT_MLP,
        "num_hidden_layers": TEXT_LAYERS, "num_attention_heads": TEXT_HEADS, "num_key_value_heads": 2,
        "max_position_embeddings": MAX_POSITIONS, **token_ids(tokenizer),
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": QWEN_MROPE_SECTION}}


def qwen_vision_token_ids(tokenizer: PreTrainedTokenizerFast) -> dict[str, int]:
    """The ids of the image, video and vision start/end tokens a Qwen-VL config names."""
    tokens = {"image_token_id": "<|image_pad|>", "video_token_id": "<|video_pad|>",
              "vision_start_token_id": "<|vision_start|>", "vision_end_token_id": "<|vision_end|>"}
    return {name: tokenizer.convert_tokens_to_ids(token) for name, token in tokens.items()}


def qwen2_vl() -> tuple[PretrainedConfig, type[PreTrainedModel], ProcessorMixin]:
    """Qwen2-VL: the vision merger outputs the text width (its ``hidden_size``), M-RoPE text."""
    processor = qwen_processor(Qwen2VLImageOnlyProcessor)
    vision = Qwen2VLVisionConfig(
        depth=VISION_LAYERS, embed_dim=VISION_HIDDEN, hidden_size=TEXT_HIDDEN, num_heads=VISION_HEADS,
        mlp_ratio=VISION_MLP // VISION_HIDDEN, patch_size=PATCH_SIZE, spatial_merge_size=QWEN_MERGE,
        temporal_patch_size=2)
    config = Qwen2VLConfig(
        text_config=Qwen2VLTextConfig(**qwen_text_kwargs(processor.tokenizer)), vision_config=vision,
        **qwen_vision_token_ids(processor.tokenizer))
    return config, Qwen2VLForConditionalGeneration, processor


def qwen2_5_vl() -> tuple[PretrainedConfig, type[PreTrainedModel], ProcessorMixin]:
    """Qwen2.5-VL: windowed vision attention (2x2 merged tokens a window) with a full last block."""
    processor = qwen_processor(Qwen2_5_VLImageOnlyProcessor)
    vision = Qwen2_5_VLVisionConfig(
        depth=VISION_LAYERS, hidden_size=VISION_HIDDEN, intermediate_size=VISION_MLP, num_heads=VISION_HEADS,
        out_hidden_size=TEXT_HIDDEN, patch_size=PATCH_SIZE, spatial_merge_size=QWEN_MERGE,
        temporal_patch_size=2, window_size=2 * QWEN_MERGE * PATCH_SIZE,
        fullatt_block_indexes=[VISION_LAYERS - 1])
    config = Qwen2_5_VLConfig(
        text_config=Qwen2_5_VLTextConfig(**qwen_text_kwargs(processor.tokenizer)), vision_config=vision,
        **qwen_vision_token_ids(processor.tokenizer))
    return config, Qwen2_5_VLForConditionalGeneration, processor


IDEFICS_EXTRAS = ("<fake_token_around_image>", "<global-img>", "<end_of_utterance>") + tuple(
    f"<row_{row}_col_{col}>" for row in range(1, IDEFICS_MAX_GRID + 1) for col in range(1, IDEFICS_MAX_GRID + 1))
IDEFICS3_TOKENS = TokenSpec(
    bos="<|begin_of_text|>", eos="<end_of_utterance>", pad="<pad>", unk="<unk>", image="<image>",
    extras=IDEFICS_EXTRAS, add_bos=False)
SMOLVLM_TOKENS = TokenSpec(
    bos="<|im_start|>", eos="<end_of_utterance>", pad="<|im_end|>", unk="<unk>", image="<image>",
    extras=IDEFICS_EXTRAS, add_bos=False)


def idefics_chat(bos: str) -> ChatFormat:
    """The Idefics3/SmolVLM chat layout: ``bos User:<image>text<end_of_utterance>\\nAssistant:``."""
    return ChatFormat(
        bos=bos, image="<image>", generation="Assistant:",
        turns={role: (f"{role.capitalize()}:", "<end_of_utterance>\n")
               for role in ("system", "user", "assistant")})


def idefics_processor(spec: TokenSpec, image_processor_class: type[BaseImageProcessor]) -> Idefics3Processor:
    """An ``Idefics3Processor`` cutting images into 32 px tiles of 4 tokens each.

    SmolVLM uses it too: ``SmolVLMProcessor`` needs ``num2words`` and a torchvision video
    processor, and expands images into exactly the same text as ``Idefics3Processor``.
    """
    template = chat_template(idefics_chat(spec.bos))
    image_processor = image_processor_class(
        size={"longest_edge": IDEFICS_LONGEST_EDGE}, max_image_size={"longest_edge": IDEFICS_TILE})
    tokens_per_tile = (IDEFICS_TILE // PATCH_SIZE) ** 2 // IDEFICS_SCALE**2
    return Idefics3Processor(
        image_processor=image_processor, tokenizer=build_tokenizer(spec, template), image_seq_len=tokens_per_tile,
        chat_template=template)


def idefics_vision_kwargs() -> dict:
    """The SigLIP-style tower shared by Idefics3 and SmolVLM: 32x32 tiles in 8 px patches."""
    return {"hidden_size": VISION_HIDDEN, "intermediate_size": VISION_MLP, "num_hidden_layers": VISION_LAYERS,
            "num_attention_heads": VISION_HEADS, "image_size": IDEFICS_TILE, "patch_size": PATCH_SIZE}


def idefics3() -> tuple[PretrainedConfig, type[PreTrainedModel], ProcessorMixin]:
    """Idefics3: SigLIP tiles, pixel shuffle by 2, Llama text with grouped-query attention."""
    processor = idefics_processor(IDEFICS3_TOKENS, Idefics3ImageProcessorPil)
    tokenizer = processor.tokenizer
    config = Idefics3Config(
        vision_config=Idefics3VisionConfig(**idefics_vision_kwargs()),
        text_config=llama_config(tokenizer, kv_heads=2), scale_factor=IDEFICS_SCALE,
        image_token_id=tokenizer.image_token_id, pad_token_id=tokenizer.pad_token_id)
    return config, Idefics3ForConditionalGeneration, processor


def smolvlm() -> tuple[PretrainedConfig, type[PreTrainedModel], ProcessorMixin]:
    """SmolVLM: the Idefics3 layout with SmolVLM's own model and image processor classes."""
    processor = idefics_processor(SMOLVLM_TOKENS, SmolVLMImageProcessorPil)
    tokenizer = processor.tokenizer
    config = SmolVLMConfig(
        vision_config=SmolVLMVisionConfig(**idefics_vision_kwargs()),
        text_config=llama_config(tokenizer, kv_heads=2), scale_factor=IDEFICS_SCALE,
        image_token_id=tokenizer.image_token_id)
    return config, SmolVLMForConditionalGeneration, processor


def _more_builders() -> dict:
    """Builders of the families that live one module each in this package (imported late: they use
    the helpers above)."""
    from tiny_models.gemma3 import gemma3
    from tiny_models.internvl import internvl
    from tiny_models.llava_onevision import llava_onevision
    from tiny_models.mistral3 import mistral3
    from tiny_models.paligemma import paligemma
    from tiny_models.qwen3_vl import qwen3_vl
    return {"gemma3": gemma3, "paligemma": paligemma, "llava_onevision": llava_onevision, "mistral3": mistral3,
            "internvl": internvl, "qwen3_vl": qwen3_vl}


BUILDERS: dict[str, Callable[[], tuple[PretrainedConfig, type[PreTrainedModel], ProcessorMixin]]] = {
    "llava": llava, "llava_next": llava_next, "qwen2_vl": qwen2_vl, "qwen2_5_vl": qwen2_5_vl,
    "idefics3": idefics3, "smolvlm": smolvlm,
}


def build_tiny(family: str, seed: int = 0) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Tiny random model (eval mode, float32, default attention implementation) + processor.
    Weight matrices the model's initialisation leaves all zero are drawn like the others.

    The seed fixes the initial weights, so two builds with the same seed are identical.
    """
    builders = {**BUILDERS, **_more_builders()}
    if family not in builders:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    config, model_class, processor = builders[family]()
    torch.manual_seed(seed)
    model = model_class(config).to(torch.float32).eval()
    with torch.no_grad():  # Gemma 3 initialises its image projection to zeros: the image would not count
        for weight in model.parameters():
            if weight.dim() > 1 and not weight.any():
                weight.normal_(std=config.get_text_config().initializer_range)
    tokenizer = processor.tokenizer
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, processor


def save_tiny(family: str, out_dir: str | Path, seed: int = 0) -> Path:
    """``build_tiny`` then save model and processor into ``out_dir``, which is returned.

    Written files: ``config.json``, ``generation_config.json`` and ``model.safetensors`` for the
    model; ``tokenizer.json`` and ``tokenizer_config.json`` for the tokenizer;
    ``chat_template.jinja``; and ``processor_config.json`` holding the processor's arguments and
    the image processor's settings. ``AutoModelForImageTextToText`` and ``AutoProcessor`` load the
    folder, except that ``AutoProcessor`` fails for the Qwen families without torchvision (it
    wants a video processor): load those with ``Qwen2VLImageOnlyProcessor.from_pretrained`` or
    ``Qwen2_5_VLImageOnlyProcessor.from_pretrained`` from :mod:`studio.engine.processors` (which
    ``studio.engine.processors.load_processor`` does).
    """
    model, processor = build_tiny(family, seed)
    out = Path(out_dir)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def sample_image(width: int = 32, height: int = 32, seed: int = 0) -> Image.Image:
    """A deterministic RGB test image: seeded colour noise over a diagonal gradient.

    The gradient gives the image a large-scale structure that survives resizing; the noise makes
    images of different seeds differ everywhere.
    """
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    ramp = (xs / max(width - 1, 1) + ys / max(height - 1, 1)) / 2
    colours = rng.integers(0, 256, size=(2, 3))
    base = colours[0] * (1 - ramp[..., None]) + colours[1] * ramp[..., None]
    noise = rng.integers(-32, 33, size=(height, width, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def untrained_world(layers: int = 2, seed: int = 3):
    """A freshly initialised (untrained) world model with ``layers`` decoder layers in a session: the
    embedded model's architecture and processor (with the phase 1-3 vocabulary, as the world model
    has before its conflict phase), fast to build."""
    from studio.engine.session import ModelSession
    from studio.world.modelkit import WorldModelSize, base_vocab_size, build_model, build_processor
    processor = build_processor()
    model = build_model(processor.tokenizer, WorldModelSize(64, 1, 2, 128, 64, layers, 2, 128), seed=seed,
                        vocab_size=base_vocab_size(processor.tokenizer))
    return ModelSession(model, processor)
