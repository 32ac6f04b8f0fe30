"""Tiny offline LLaVA-OneVision: a SigLIP tower over 32x32 views, a Qwen2 text model.

Every image gives a 32x32 base view (4x4 patches, 16 ``<image>`` tokens) plus 32x32 tiles laid
out by the best of ``ONEVISION_PINPOINTS`` (every 1..3 x 1..3 tile layout, as the real
checkpoints offer 1..6 x 1..6); the tiles' features are joined into one grid, cropped of the
padding that kept the aspect ratio, bilinearly pooled when the grid holds more than
``ONEVISION_MAX_TILES`` tiles' worth of patches by over 10% in area (the real "anyres_max_9"
logic, here "anyres_max_4"), and closed by one ``image_newline`` token per row. Image sizes
below are width x height:

- 32x32: one tile, a 4x4 grid, 16 + 4 * (4 + 1) = 36 tokens;
- 64x32: 1x2 tiles, a 4x8 grid, 16 + 4 * (8 + 1) = 52 tokens;
- 96x64: 2x3 tiles, an 8x12 grid, area ratio sqrt(96 / 64) = 1.22 > 1.1, pooled to 6x9:
  16 + 6 * (9 + 1) = 76 tokens;
- 96x96: 3x3 tiles, a 12x12 grid pooled by 1.5 to 8x8: 16 + 8 * 9 = 88 tokens.
"""
from __future__ import annotations

from transformers import (
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessorPil,
    PretrainedConfig,
    PreTrainedModel,
    ProcessorMixin,
    Qwen2Config,
    SiglipVisionConfig,
)

from studio.engine.processors import LlavaOnevisionImageOnlyProcessor
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

ONEVISION_VIEW = 32
ONEVISION_PINPOINTS = [[ONEVISION_VIEW * rows, ONEVISION_VIEW * cols] for rows in (1, 2, 3) for cols in (1, 2, 3)]
ONEVISION_MAX_TILES = 4
ONEVISION_TOKENS = TokenSpec(
    bos="<|endoftext|>", eos="<|im_end|>", pad="<|endoftext|>", unk="<unk>", image="<image>",
    extras=("<|im_start|>", "<video>"), add_bos=False)
ONEVISION_CHAT = ChatFormat(
    bos="", image="<image>\n", generation="<|im_start|>assistant\n",
    turns={role: (f"<|im_start|>{role}\n", "<|im_end|>\n") for role in ("system", "user", "assistant")})




def llava_onevision() -> tuple[PretrainedConfig, type[PreTrainedModel], ProcessorMixin]:
    """LLaVA-OneVision: all-patch SigLIP features ("full"), anyres tiles pooled beyond 4 tiles."""
    template = chat_template(ONEVISION_CHAT)
    tokenizer = build_tokenizer(ONEVISION_TOKENS, template)
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": ONEVISION_VIEW, "width": ONEVISION_VIEW}, image_grid_pinpoints=ONEVISION_PINPOINTS)
    aspect = f"anyres_max_{ONEVISION_MAX_TILES}"
    processor = LlavaOnevisionImageOnlyProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=template,
        num_image_tokens=(ONEVISION_VIEW // PATCH_SIZE) ** 2, vision_feature_select_strategy="full",
        vision_aspect_ratio=aspect)
    vision = SiglipVisionConfig(
        hidden_size=VISION_HIDDEN, intermediate_size=VISION_MLP, num_hidden_layers=VISION_LAYERS,
        num_attention_heads=VISION_HEADS, image_size=ONEVISION_VIEW, patch_size=PATCH_SIZE, vision_use_head=False)
    text = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=TEXT_HIDDEN, intermediate_size=TEXT_MLP,
        num_hidden_layers=TEXT_LAYERS, num_attention_heads=TEXT_HEADS, num_key_value_heads=2,
        max_position_embeddings=MAX_POSITIONS, **token_ids(tokenizer))
    config = LlavaOnevisionConfig(
        vision_config=vision, text_config=text, image_token_index=tokenizer.image_token_id,
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"), vision_feature_select_strategy="full",
        vision_feature_layer=-1, image_grid_pinpoints=ONEVISION_PINPOINTS, vision_aspect_ratio=aspect)
    return config, LlavaOnevisionForConditionalGeneration, processor
