"""Build the embedded world model: its word-level tokenizer, LLaVA processor and model config.

Everything is made offline from `tokenizers` and `transformers` classes and saved in Hugging
Face format, so ``AutoProcessor`` and ``AutoModelForImageTextToText`` load the folder.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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

from studio.world.language import CONTEXT_WORDS, vocabulary
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


def base_vocab_size(tokenizer: PreTrainedTokenizerFast) -> int:
    """The vocabulary of training phases 1-3, before the conflict words join (phase 4)."""
    return len(tokenizer) - len(CONTEXT_WORDS)


def build_config(tokenizer: PreTrainedTokenizerFast, size: WorldModelSize = WorldModelSize(),
                 vocab_size: int | None = None) -> LlavaConfig:
    vision = CLIPVisionConfig(
        hidden_size=size.vision_hidden, intermediate_size=size.vision_mlp,
        num_hidden_layers=size.vision_layers, num_attention_heads=size.vision_heads,
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=size.vision_hidden)
    text = LlamaConfig(
        vocab_size=vocab_size or len(tokenizer), hidden_size=size.text_hidden, intermediate_size=size.text_mlp,
        num_hidden_layers=size.text_layers, num_attention_heads=size.text_heads,
        num_key_value_heads=size.text_heads, max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    n_patches = (IMAGE_SIZE // PATCH_SIZE) ** 2
    return LlavaConfig(
        vision_config=vision, text_config=text,
        image_token_index=image_token_id(tokenizer), image_seq_length=n_patches,
        vision_feature_select_strategy="default", vision_feature_layer=-1)


def image_token_id(tokenizer: PreTrainedTokenizerFast) -> int:
    """The id of the world tokenizer's image token."""
    found = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert isinstance(found, int)
    return found


def build_model(tokenizer: PreTrainedTokenizerFast, size: WorldModelSize = WorldModelSize(),
                seed: int = 0, vocab_size: int | None = None) -> LlavaForConditionalGeneration:
    """A freshly initialised world model; the seed fixes its initial weights."""
    torch.manual_seed(seed)
    config: Any = build_config(tokenizer, size, vocab_size)
    config.text_config.pad_token_id = tokenizer.pad_token_id
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def extend_vocabulary(model: LlavaForConditionalGeneration, vocab_size: int, seed: int = 0) -> None:
    """Grow the input and output embeddings to ``vocab_size`` rows; new rows start at the mean
    of the old ones plus small seeded noise, so existing tokens keep their exact weights."""
    model_: Any = model
    old = model_.get_input_embeddings().weight.shape[0]
    if vocab_size <= old:
        return
    generator = torch.Generator().manual_seed(seed)
    for module in (model_.get_input_embeddings(), model_.get_output_embeddings()):
        weight = module.weight.data
        fresh = weight.mean(0, keepdim=True) + 0.02 * torch.randn(vocab_size - old, weight.shape[1], generator=generator)
        module.weight = torch.nn.Parameter(torch.cat([weight, fresh.to(weight.dtype)]))
        if isinstance(module, torch.nn.Embedding):
            module.num_embeddings = vocab_size
        else:
            module.out_features = vocab_size
    model_.config.text_config.vocab_size = vocab_size


def chat_batch(processor, images: list, prompts: list[str], answers: list[str]) -> Any:
    """Teacher-forced chat inputs (user: image + prompt, assistant: answer), right-padded."""
    texts = [processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": p}]},
         {"role": "assistant", "content": a}]) for p, a in zip(prompts, answers)]
    return processor(images=images, text=texts, return_tensors="pt", padding=True, padding_side="right")


def answer_labels(batch: dict, tokenizer) -> torch.Tensor:
    """Labels of a :func:`chat_batch`: the answer tokens, everything else -100."""
    labels = batch["input_ids"].clone()
    assistant = tokenizer.convert_tokens_to_ids(ASSISTANT)
    for row in labels:
        cut = int((row == assistant).nonzero()[-1]) + 1
        row[:cut] = -100
    labels[batch["attention_mask"] == 0] = -100
    labels[batch["input_ids"] == tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)] = -100
    return labels
