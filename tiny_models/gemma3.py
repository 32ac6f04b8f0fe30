"""Tiny offline Gemma 3: a SigLIP tower over 64x64 images in 8 px patches (an 8x8 patch grid),
average-pooled 2x2 into 16 soft tokens (a 4x4 grid) between ``<start_of_image>`` and
``<end_of_image>``; a 2-layer Gemma 3 text model with one sliding-window and one global layer.

The image processor squashes every image to 64x64 (no aspect ratio kept), so the 4x4 grid
covers the whole image. Pan-and-scan stays off, as in ``Gemma3Processor``'s defaults.
"""
from __future__ import annotations

from transformers import (
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma3ImageProcessorPil,
    Gemma3Processor,
    Gemma3TextConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    ProcessorMixin,
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
    ChatFormat,
    TokenSpec,
    build_tokenizer,
    chat_template,
    token_ids,
)

GEMMA3_IMAGE_SIZE = 64
GEMMA3_TOKENS_PER_IMAGE = 16  # 4x4 soft tokens, each the average of 2x2 of the 8x8 patches
GEMMA3_SLIDING_WINDOW = 32  # shorter than a prompt with an image, so the local layer really is local
GEMMA3_TOKENS = TokenSpec(
    bos="<bos>", eos="<end_of_turn>", pad="<pad>", unk="<unk>", image="<image_soft_token>",
    extras=("<eos>", "<start_of_turn>", "<start_of_image>", "<end_of_image>"), add_bos=True)
GEMMA3_CHAT = ChatFormat(
    bos="<bos>", image="<start_of_image>", generation="<start_of_turn>model\n",
    turns={"user": ("<start_of_turn>user\n", "<end_of_turn>\n"),
           "assistant": ("<start_of_turn>model\n", "<end_of_turn>\n")})


def named_tokens(tokenizer: PreTrainedTokenizerFast, **tokens: str) -> PreTrainedTokenizerFast:
    """``tokenizer`` rebuilt with more named special tokens (e.g. ``boi_token``), which processors
    read as ``tokenizer.<name>`` and ``tokenizer.<name>_id`` and which survive save and reload."""
    kwargs = dict(tokenizer.init_kwargs)
    kwargs["extra_special_tokens"] = {**kwargs.get("extra_special_tokens", {}), **tokens}
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer, **kwargs)


def gemma3() -> tuple[PretrainedConfig, type[PreTrainedModel], ProcessorMixin]:
    """Gemma 3: ``<bos><start_of_turn>user\\n`` + the image as ``\\n\\n<start_of_image>`` 16 x
    ``<image_soft_token>`` ``<end_of_image>\\n\\n`` + the prompt ``<end_of_turn>\\n<start_of_turn>model\\n``.

    As Gemma 3's own, the template starts with ``<bos>`` and the tokenizer prepends one too (the
    processor's ``apply_chat_template`` tokenizes without special tokens for that reason). The
    answer ends at ``<end_of_turn>``, the tokenizer's eos here (Gemma 3 lists it among the
    generation config's eos ids). Gemma 3's template folds a system message into the first user
    turn, which ``ChatFormat`` cannot express, so this one has no system role (the studio never
    sends one).
    """
    template = chat_template(GEMMA3_CHAT)
    tokenizer = named_tokens(build_tokenizer(GEMMA3_TOKENS, template),
                             boi_token="<start_of_image>", eoi_token="<end_of_image>")
    image_processor = Gemma3ImageProcessorPil(size={"height": GEMMA3_IMAGE_SIZE, "width": GEMMA3_IMAGE_SIZE})
    processor = Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer, chat_template=template,
                                image_seq_length=GEMMA3_TOKENS_PER_IMAGE)
    head_dim = TEXT_HIDDEN // TEXT_HEADS
    text = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=TEXT_HIDDEN, intermediate_size=TEXT_MLP,
        num_hidden_layers=TEXT_LAYERS, num_attention_heads=TEXT_HEADS, num_key_value_heads=2, head_dim=head_dim,
        query_pre_attn_scalar=head_dim, sliding_window=GEMMA3_SLIDING_WINDOW,
        layer_types=["sliding_attention", "full_attention"], max_position_embeddings=MAX_POSITIONS,
        **token_ids(tokenizer))
    vision = SiglipVisionConfig(
        hidden_size=VISION_HIDDEN, intermediate_size=VISION_MLP, num_hidden_layers=VISION_LAYERS,
        num_attention_heads=VISION_HEADS, image_size=GEMMA3_IMAGE_SIZE, patch_size=PATCH_SIZE,
        vision_use_head=False)
    config = Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=GEMMA3_TOKENS_PER_IMAGE,
        image_token_index=tokenizer.image_token_id, boi_token_index=tokenizer.boi_token_id,
        eoi_token_index=tokenizer.eoi_token_id)
    return config, Gemma3ForConditionalGeneration, processor
