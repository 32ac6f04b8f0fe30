"""Build the embedded world model: its word-level tokenizer, LLaVA processor and model config.

Everything is made offline from `tokenizers` and `transformers` classes and saved in Hugging
Face format, so ``AutoProcessor`` and ``AutoModelForImageTextToText`` load the folder.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from studio.world.language import vocabulary
from studio.world.render import IMAGE_SIZE

PAD, BOS, EOS, UNK = "<pad>", "<s>", "<|end|>", "<unk>"
IMAGE_TOKEN, USER, ASSISTANT = "<image>", "<|user|>", "<|assistant|>"
SPECIALS = (PAD, BOS, EOS, UNK, IMAGE_TOKEN, USER, ASSISTANT)
PATCH_SIZE = 8
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '<|user|>' }}"
    "{% if message['content'] is string %}{{ ' ' + message['content'] }}"
    "{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}{{ ' <image>' }}{% elif c['type'] == 'text' %}{{ ' ' + c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% elif message['role'] == 'assistant' %}{{ ' <|assistant|> ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{% endif %}{{ ' <|end|>' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ ' <|assistant|>' }}{% endif %}"
)


@dataclass(frozen=True)
class WorldModelSize:
    """Widths and depths of the embedded model; defaults are the shipped model's."""

    vision_hidden: int = 128
    vision_layers: int = 3
    vision_heads: int = 4
    vision_mlp: int = 512
    text_hidden: int = 192
    text_layers: int = 4
    text_heads: int = 4
    text_mlp: int = 512


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A lower-casing word-level tokenizer over the world's vocabulary plus chat specials."""
    vocab = {tok: i for i, tok in enumerate(list(SPECIALS) + vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])])
    tok.add_special_tokens(list(SPECIALS))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, unk_token=UNK, pad_token=PAD,
        extra_special_tokens={"image_token": IMAGE_TOKEN}, padding_side="left",
        model_max_length=512, chat_template=CHAT_TEMPLATE)


def build_processor() -> LlavaProcessor:
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=build_tokenizer(), patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE, image_token=IMAGE_TOKEN)


def build_config(tokenizer: PreTrainedTokenizerFast, size: WorldModelSize = WorldModelSize()) -> LlavaConfig:
    vision = CLIPVisionConfig(
        hidden_size=size.vision_hidden, intermediate_size=size.vision_mlp,
        num_hidden_layers=size.vision_layers, num_attention_heads=size.vision_heads,
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=size.vision_hidden)
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=size.text_hidden, intermediate_size=size.text_mlp,
        num_hidden_layers=size.text_layers, num_attention_heads=size.text_heads,
        num_key_value_heads=size.text_heads, max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    n_patches = (IMAGE_SIZE // PATCH_SIZE) ** 2
    return LlavaConfig(
        vision_config=vision, text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), image_seq_length=n_patches,
        vision_feature_select_strategy="default", vision_feature_layer=-1)


def build_model(tokenizer: PreTrainedTokenizerFast, size: WorldModelSize = WorldModelSize(),
                seed: int = 0) -> LlavaForConditionalGeneration:
    """A freshly initialised world model; the seed fixes its initial weights."""
    torch.manual_seed(seed)
    config = build_config(tokenizer, size)
    config.text_config.pad_token_id = tokenizer.pad_token_id
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model
