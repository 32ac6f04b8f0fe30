"""Tiny offline PaliGemma 2 (and, on request, PaliGemma 1): a SigLIP tower over 32x32 images in
8 px patches, 16 ``<image>`` tokens (a 4x4 grid) linearly projected to the text width, placed
before ``<bos>`` and the prompt; a 2-layer Gemma 2 (PaliGemma 2) or Gemma (PaliGemma 1) text model
attending bidirectionally over image and prompt.

The image processor squashes every image to 32x32 (no aspect ratio kept), so the grid covers
the whole image. There is no chat template: the studio writes ``<image>`` then the prompt, and
``PaliGemmaProcessor`` expands the image token, puts ``<bos>`` after it and ``\\n`` at the end.
The processor adds PaliGemma's 1024 ``<locNNNN>`` and 128 ``<segNNN>`` tokens to the tokenizer,
so the text model's vocabulary is sized after building the processor.
"""
from __future__ import annotations

from transformers import (
    Gemma2Config,
    GemmaConfig,
    PaliGemmaConfig,
    PaliGemmaForConditionalGeneration,
    PaliGemmaProcessor,
    PretrainedConfig,
    PreTrainedModel,
    ProcessorMixin,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
)

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
    TokenSpec,
    build_tokenizer,
    token_ids,
)

PALIGEMMA_IMAGE_SIZE = 32
PALIGEMMA_TOKENS = TokenSpec(
    bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>", image="<image>", extras=(), add_bos=True)
PALIGEMMA2_SLIDING_WINDOW = 16  # shorter than a prompt with an image, so the local layer really is local
PALIGEMMA2_SOFTCAPS = {"final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0}  # PaliGemma 2's own


def paligemma(version: int = 2) -> tuple[PretrainedConfig, type[PreTrainedModel], ProcessorMixin]:
    """PaliGemma ``version`` 2 (Gemma 2 text: soft-capped logits and attention, alternating
    sliding-window and global layers) or 1 (Gemma text): 16 image tokens + ``<bos>`` + prompt."""
    image_processor = SiglipImageProcessorPil(
        size={"height": PALIGEMMA_IMAGE_SIZE, "width": PALIGEMMA_IMAGE_SIZE},
        image_seq_length=(PALIGEMMA_IMAGE_SIZE // PATCH_SIZE) ** 2)
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=build_tokenizer(PALIGEMMA_TOKENS, ""))
    tokenizer = processor.tokenizer
    head_dim = TEXT_HIDDEN // TEXT_HEADS
    text_kwargs = {
        "vocab_size": len(tokenizer), "hidden_size": TEXT_HIDDEN, "intermediate_size": TEXT_MLP,
        "num_hidden_layers": TEXT_LAYERS, "num_attention_heads": TEXT_HEADS, "num_key_value_heads": 1,
        "head_dim": head_dim, "max_position_embeddings": MAX_POSITIONS, **token_ids(tokenizer)}
    text: PretrainedConfig = GemmaConfig(**text_kwargs) if version == 1 else Gemma2Config(
        **text_kwargs, query_pre_attn_scalar=head_dim, sliding_window=PALIGEMMA2_SLIDING_WINDOW,
        layer_types=["sliding_attention", "full_attention"], **PALIGEMMA2_SOFTCAPS)
    vision = SiglipVisionConfig(
        hidden_size=VISION_HIDDEN, intermediate_size=VISION_MLP, num_hidden_layers=VISION_LAYERS,
        num_attention_heads=VISION_HEADS, image_size=PALIGEMMA_IMAGE_SIZE, patch_size=PATCH_SIZE,
        vision_use_head=False)
    config = PaliGemmaConfig(
        text_config=text, vision_config=vision, image_token_index=tokenizer.image_token_id,
        vocab_size=len(tokenizer), projection_dim=TEXT_HIDDEN, hidden_size=TEXT_HIDDEN)
    return config, PaliGemmaForConditionalGeneration, processor
