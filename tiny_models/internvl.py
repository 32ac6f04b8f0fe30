"""Tiny offline InternVL (the transformers-native InternVL 3 / 3.5 port).

The GotOcr2 image processor cuts an image into 32x32 tiles: the tile layout (cols x rows, at
most ``INTERNVL_MAX_TILES`` tiles) is the one whose aspect ratio is closest to the image's, the
image is resized to exactly that many tiles, and a 32x32 thumbnail of the whole image follows
whenever there is more than one tile. Each tile is 4x4 patches of 8 px, pixel-shuffled by the
downsample ratio 0.5 into a 2x2 grid, so every tile is 4 ``<IMG_CONTEXT>`` tokens, all of an
image's tiles one run between ``<img>`` and ``</img>``: a 32x32 image is one tile (4 tokens), a
64x32 image 2x1 tiles + thumbnail (12 tokens), a 48x32 image 3x2 tiles + thumbnail (28 tokens).
"""
from __future__ import annotations

from transformers import (
    GotOcr2ImageProcessorPil,
    InternVLConfig,
    InternVLForConditionalGeneration,
    InternVLVisionConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    ProcessorMixin,
    Qwen2Config,
)

from studio.engine.processors import InternVLImageOnlyProcessor
from tiny_models import (
    MAX_POSITIONS,
    PATCH_SIZE,
    TEXT_HEADS,
    TEXT_HIDDEN,
    TEXT_LAYERS,
    TEXT_MLP,
    VISION_HEADS,
    VISION_HIDDEN,
    VISION_LAYERS,
    VISION_MLP,
    ChatFormat,
    TokenSpec,
    build_tokenizer,
    chat_template,
    token_ids,
)

INTERNVL_TILE, INTERNVL_MAX_TILES, INTERNVL_DOWNSAMPLE = 32, 6, 0.5
INTERNVL_NAMED_TOKENS = {"start_image_token": "<img>", "end_image_token": "</img>",
                         "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"}
INTERNVL_TOKENS = TokenSpec(
    bos="<|endoftext|>", eos="<|im_end|>", pad="<|endoftext|>", unk="<unk>", image="<IMG_CONTEXT>",
    extras=("<|im_start|>", "<img>", "</img>", "<video>"), add_bos=False)
INTERNVL_CHAT = ChatFormat(
    bos="", image="<IMG_CONTEXT>\n", generation="<|im_start|>assistant\n",
    turns={role: (f"<|im_start|>{role}\n", "<|im_end|>\n") for role in ("system", "user", "assistant")})


def internvl_tokenizer(template: str) -> PreTrainedTokenizerFast:
    """The word-level tokenizer, re-wrapped to name the image tokens InternVL's processor reads
    (``tokenizer.start_image_token`` and the like), as the released tokenizers do."""
    base = build_tokenizer(INTERNVL_TOKENS, template)
    kwargs = {k: v for k, v in base.init_kwargs.items() if k != "backend"}
    return PreTrainedTokenizerFast(
        tokenizer_object=base.backend_tokenizer, **{**kwargs, "extra_special_tokens": INTERNVL_NAMED_TOKENS})


def internvl() -> tuple[PretrainedConfig, type[PreTrainedModel], ProcessorMixin]:
    """InternVL: 32 px tiles of 4 tokens each, a Qwen2 text model, the projector's tied unembedding."""
    template = chat_template(INTERNVL_CHAT)
    tokenizer = internvl_tokenizer(template)
    tokens_per_tile = int((INTERNVL_TILE // PATCH_SIZE * INTERNVL_DOWNSAMPLE) ** 2)
    image_processor = GotOcr2ImageProcessorPil(
        size={"height": INTERNVL_TILE, "width": INTERNVL_TILE}, crop_to_patches=True, min_patches=1,
        max_patches=INTERNVL_MAX_TILES)
    processor = InternVLImageOnlyProcessor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_length=tokens_per_tile,
        chat_template=template)
    vision = InternVLVisionConfig(
        hidden_size=VISION_HIDDEN, intermediate_size=VISION_MLP, num_hidden_layers=VISION_LAYERS,
        num_attention_heads=VISION_HEADS, image_size=INTERNVL_TILE, patch_size=PATCH_SIZE)
    text = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=TEXT_HIDDEN, intermediate_size=TEXT_MLP,
        num_hidden_layers=TEXT_LAYERS, num_attention_heads=TEXT_HEADS, num_key_value_heads=2,
        max_position_embeddings=MAX_POSITIONS, tie_word_embeddings=True, **token_ids(tokenizer))
    config = InternVLConfig(
        vision_config=vision, text_config=text, image_token_id=tokenizer.context_image_token_id,
        image_seq_length=tokens_per_tile, downsample_ratio=INTERNVL_DOWNSAMPLE)
    return config, InternVLForConditionalGeneration, processor
