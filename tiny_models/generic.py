"""Tiny offline models of families the studio serves with its generic adapter, and of the kinds
it refuses, for tests of both paths.

- ``instructblip``: InstructBLIP with a Llama text model. The processor puts ``QUERIES`` image
  tokens (the Q-Former's query outputs, not patches) before the prompt, so the studio maps them
  at token level, with no patch grid.
- ``refused_configs``: configs of models whose image never enters the decoder's token stream
  (Llama 3.2 Vision's cross-attention, Florence-2's encoder-decoder).
"""
from __future__ import annotations

from transformers import (
    BlipImageProcessorPil,
    Florence2Config,
    InstructBlipConfig,
    InstructBlipForConditionalGeneration,
    InstructBlipProcessor,
    InstructBlipQFormerConfig,
    InstructBlipVisionConfig,
    MllamaConfig,
    PretrainedConfig,
    PreTrainedModel,
    ProcessorMixin,
)

from tiny_models import (
    CLIP_IMAGE_SIZE,
    PATCH_SIZE,
    VISION_HEADS,
    VISION_HIDDEN,
    VISION_LAYERS,
    VISION_MLP,
    TokenSpec,
    build_tokenizer,
    llama_config,
)

QUERIES = 6
BLIP_TOKENS = TokenSpec(bos="<s>", eos="</s>", pad="<pad>", unk="<unk>", image="<image>", extras=(), add_bos=True)
QFORMER_TOKENS = TokenSpec(bos="[CLS]", eos="[SEP]", pad="[PAD]", unk="[UNK]", image="[IMG]", extras=(), add_bos=True)


def instructblip() -> tuple[PretrainedConfig, type[PreTrainedModel], ProcessorMixin]:
    """InstructBLIP: a 32x32 image, a one-layer Q-Former with ``QUERIES`` queries, Llama text."""
    tokenizer = build_tokenizer(BLIP_TOKENS, "", image_attribute=False)
    qformer_tokenizer = build_tokenizer(QFORMER_TOKENS, "", image_attribute=False)
    image_processor = BlipImageProcessorPil(size={"height": CLIP_IMAGE_SIZE, "width": CLIP_IMAGE_SIZE})
    processor = InstructBlipProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                      qformer_tokenizer=qformer_tokenizer, num_query_tokens=QUERIES)
    vision = InstructBlipVisionConfig(
        hidden_size=VISION_HIDDEN, intermediate_size=VISION_MLP, num_hidden_layers=VISION_LAYERS,
        num_attention_heads=VISION_HEADS, image_size=CLIP_IMAGE_SIZE, patch_size=PATCH_SIZE)
    qformer = InstructBlipQFormerConfig(
        vocab_size=len(qformer_tokenizer), hidden_size=VISION_HIDDEN, num_hidden_layers=1,
        num_attention_heads=VISION_HEADS, intermediate_size=VISION_MLP, pad_token_id=qformer_tokenizer.pad_token_id)
    config = InstructBlipConfig(vision_config=vision.to_dict(), qformer_config=qformer.to_dict(),
                                text_config=llama_config(tokenizer, kv_heads=2).to_dict(), num_query_tokens=QUERIES,
                                image_token_index=tokenizer.convert_tokens_to_ids(BLIP_TOKENS.image))
    return config, InstructBlipForConditionalGeneration, processor


def refused_configs() -> dict[str, PretrainedConfig]:
    """Configs (no weights needed) of the kinds the studio refuses, by why."""
    return {"cross-attention": MllamaConfig(), "encoder-decoder": Florence2Config()}
