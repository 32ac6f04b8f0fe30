"""Tiny offline Qwen3-VL: the Qwen2-VL image processor and chat layout (8 px patches merged 2x2,
images resized to 16x16 .. 64x64 pixels, so 32x32 gives 4 tokens in a 2x2 grid and 48x32 6 tokens
in a 2x3 grid), a Qwen3 text model with interleaved M-RoPE, and one DeepStack merger feeding the
first vision block's features into the first decoder layer's output.
"""
from __future__ import annotations

from transformers import (
    PretrainedConfig,
    PreTrainedModel,
    ProcessorMixin,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLTextConfig,
    Qwen3VLVisionConfig,
)

from studio.engine.processors import Qwen3VLImageOnlyProcessor
from tiny_models import (
    PATCH_SIZE,
    QWEN_MERGE,
    TEXT_HEADS,
    TEXT_HIDDEN,
    VISION_HEADS,
    VISION_HIDDEN,
    VISION_LAYERS,
    VISION_MLP,
    qwen_processor,
    qwen_text_kwargs,
    qwen_vision_token_ids,
)

# Interleaved M-RoPE over head_dim / 2 = 8 frequencies: height takes frequencies 1, 4, width 2, 5
# and time the other 4, the released 24 : 20 : 20 split scaled down.
QWEN3_MROPE_SECTION = [4, 2, 2]
QWEN3_POSITION_GRID = 8  # learned vision position embeddings on an 8x8 grid, interpolated per image
QWEN3_DEEPSTACK = [0]  # vision blocks whose merged features are added after the first decoder layers


def qwen3_vl() -> tuple[PretrainedConfig, type[PreTrainedModel], ProcessorMixin]:
    """Qwen3-VL: Qwen3 text (q/k norm, explicit head_dim), DeepStack visual features, untied unembedding."""
    processor = qwen_processor(Qwen3VLImageOnlyProcessor)
    text = qwen_text_kwargs(processor.tokenizer)
    text["head_dim"] = TEXT_HIDDEN // TEXT_HEADS
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": QWEN3_MROPE_SECTION,
                               "mrope_interleaved": True}
    vision = Qwen3VLVisionConfig(
        depth=VISION_LAYERS, hidden_size=VISION_HIDDEN, intermediate_size=VISION_MLP, num_heads=VISION_HEADS,
        out_hidden_size=TEXT_HIDDEN, patch_size=PATCH_SIZE, spatial_merge_size=QWEN_MERGE, temporal_patch_size=2,
        num_position_embeddings=QWEN3_POSITION_GRID**2, deepstack_visual_indexes=QWEN3_DEEPSTACK)
    config = Qwen3VLConfig(
        text_config=Qwen3VLTextConfig(**text), vision_config=vision, **qwen_vision_token_ids(processor.tokenizer))
    return config, Qwen3VLForConditionalGeneration, processor
