"""Tiny offline Mistral 3 and Pixtral-in-LLaVA: a Pixtral vision tower over 8 px patches.

The Pixtral image processor shrinks an image to fit ``PIXTRAL_LONGEST_EDGE`` (never enlarging
it), then resizes each side up to a multiple of one token's pixel step (``patch_size`` times
``spatial_merge_size``). The prompt holds one ``[IMG]`` per token, row by row, an
``[IMG_BREAK]`` after each row and ``[IMG_END]`` instead of the last break; only ``[IMG]``
positions receive image features, the two others are ordinary text embeddings. Image sizes
below are width x height.

- ``mistral3``: 2x2 patches merged per token (16 px): 32x32 -> a 2x2 grid, 4 + 2 = 6 image-stream
  tokens; 40x24 -> 48x32 px, a 2x3 grid, 6 + 2 = 8; 2000x20 -> 128x16 px, a 1x8 grid.
- ``llava_pixtral`` (Pixtral-12B's layout: ``LlavaForConditionalGeneration``, no merge, 8 px a
  token): 32x32 -> a 4x4 grid, 16 + 4 = 20 tokens; 40x24 -> a 3x5 grid, 15 + 3 = 18.
"""
from __future__ import annotations

from transformers import (
    LlavaConfig,
    LlavaForConditionalGeneration,
    Mistral3Config,
    Mistral3ForConditionalGeneration,
    MistralConfig,
    PixtralImageProcessorPil,
    PixtralVisionConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    ProcessorMixin,
)

from studio.engine.processors import PixtralPilProcessor
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

PIXTRAL_LONGEST_EDGE = 128  # >= 100, so that a 2000x20 image keeps a row of pixels after the shrink
MISTRAL3_MERGE = 2
PIXTRAL_TOKENS = TokenSpec(
    bos="<s>", eos="</s>", pad="<pad>", unk="<unk>", image="[IMG]",
    extras=("[IMG_BREAK]", "[IMG_END]", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]"), add_bos=False)
PIXTRAL_CHAT = ChatFormat(
    bos="<s>", image="[IMG]", generation="",
    turns={"system": ("[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]"), "user": ("[INST]", "[/INST]"),
           "assistant": ("", "</s>")})




def pixtral_processor(merge: int) -> tuple[PixtralPilProcessor, PreTrainedTokenizerFast]:
    """A Pixtral processor over 8 px patches merged ``merge`` x ``merge`` per token, and its tokenizer."""
    template = chat_template(PIXTRAL_CHAT)
    tokenizer = build_tokenizer(PIXTRAL_TOKENS, template)
    image_processor = PixtralImageProcessorPil(
        size={"longest_edge": PIXTRAL_LONGEST_EDGE}, patch_size={"height": PATCH_SIZE, "width": PATCH_SIZE})
    processor = PixtralPilProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH_SIZE, spatial_merge_size=merge,
        chat_template=template)
    return processor, tokenizer


def pixtral_vision_config() -> PixtralVisionConfig:
    """A Pixtral tower over images up to ``PIXTRAL_LONGEST_EDGE`` px in 8 px patches (2D RoPE)."""
    return PixtralVisionConfig(
        hidden_size=VISION_HIDDEN, intermediate_size=VISION_MLP, num_hidden_layers=VISION_LAYERS,
        num_attention_heads=VISION_HEADS, image_size=PIXTRAL_LONGEST_EDGE, patch_size=PATCH_SIZE)


def mistral_config(tokenizer: PreTrainedTokenizerFast) -> MistralConfig:
    """The tiny Mistral text model (grouped-query attention, no sliding window)."""
    return MistralConfig(
        vocab_size=len(tokenizer), hidden_size=TEXT_HIDDEN, intermediate_size=TEXT_MLP,
        num_hidden_layers=TEXT_LAYERS, num_attention_heads=TEXT_HEADS, num_key_value_heads=2,
        head_dim=TEXT_HIDDEN // TEXT_HEADS, max_position_embeddings=MAX_POSITIONS, sliding_window=None,
        **token_ids(tokenizer))


def mistral3() -> tuple[PretrainedConfig, type[PreTrainedModel], ProcessorMixin]:
    """Mistral 3: Pixtral tower, 2x2 patch merger in the projector, Mistral text model."""
    processor, tokenizer = pixtral_processor(MISTRAL3_MERGE)
    config = Mistral3Config(
        vision_config=pixtral_vision_config(), text_config=mistral_config(tokenizer),
        image_token_index=processor.image_token_id, spatial_merge_size=MISTRAL3_MERGE, vision_feature_layer=-1)
    return config, Mistral3ForConditionalGeneration, processor


def llava_pixtral() -> tuple[PretrainedConfig, type[PreTrainedModel], ProcessorMixin]:
    """Pixtral-12B's layout: ``LlavaForConditionalGeneration`` over a Pixtral tower, one token a patch.

    Not in ``FAMILIES`` (it is the ``llava`` family); tests build it directly.
    """
    processor, tokenizer = pixtral_processor(1)
    config = LlavaConfig(
        vision_config=pixtral_vision_config(), text_config=mistral_config(tokenizer),
        image_token_index=processor.image_token_id, vision_feature_select_strategy="full", vision_feature_layer=-1)
    return config, LlavaForConditionalGeneration, processor
