"""Family adapters, looked up by ``config.model_type``; any other model that splices image
features into the decoder's token stream gets the :class:`GenericAdapter`."""
from __future__ import annotations

from typing import Any

from torch import nn

from studio.adapters.base import (
    IMAGE_TOKEN_NAMES,
    Adapter,
    AdapterError,
    ImagePlacement,
    PatchGrid,
    TokenMap,
)
from studio.adapters.gemma3 import Gemma3Adapter
from studio.adapters.generic import GenericAdapter
from studio.adapters.idefics3 import Idefics3Adapter
from studio.adapters.internvl import InternVLAdapter
from studio.adapters.llava import LlavaAdapter
from studio.adapters.llava_next import LlavaNextAdapter
from studio.adapters.llava_onevision import LlavaOnevisionAdapter
from studio.adapters.mistral3 import Mistral3Adapter
from studio.adapters.paligemma import PaliGemmaAdapter
from studio.adapters.qwen2_vl import Qwen2VLAdapter
from studio.adapters.qwen3_vl import Qwen3VLAdapter

ADAPTERS: tuple[type[Adapter], ...] = (LlavaAdapter, LlavaNextAdapter, Qwen2VLAdapter, Idefics3Adapter, Gemma3Adapter,
                                       PaliGemmaAdapter, LlavaOnevisionAdapter, Mistral3Adapter, InternVLAdapter,
                                       Qwen3VLAdapter)


def supported_model_types() -> list[str]:
    """Model types with an adapter of their own (patch geometry); others may still run generically."""
    return sorted(t for a in ADAPTERS for t in a.model_types)


def check_supported(config: Any) -> None:
    """Refuse, naming why, a model whose image never enters the decoder's token stream."""
    text = getattr(config, "text_config", None) or config
    kind = getattr(config, "model_type", "?")
    if getattr(config, "is_encoder_decoder", False) or getattr(text, "is_encoder_decoder", False):
        raise AdapterError(f"'{kind}' is an encoder-decoder model: its image is read by an encoder and never "
                           "enters a decoder token stream, which every probe of the studio reads")
    if getattr(text, "cross_attention_layers", None):
        raise AdapterError(f"'{kind}' reads the image through cross-attention layers, not as tokens in the "
                           "decoder's stream, which every probe of the studio reads")
    if kind in supported_model_types():
        return
    if not any(getattr(config, name, None) is not None for name in IMAGE_TOKEN_NAMES):
        raise AdapterError(f"'{kind}' names no image token id in its config, so the studio cannot tell which "
                           f"positions hold the image; families with their own adapter: "
                           f"{', '.join(supported_model_types())}")


def adapter_for(model: nn.Module, processor=None) -> Adapter:
    """The adapter serving ``model``'s ``config.model_type``; the generic one for other models
    with image tokens in the stream; a clear error for the rest."""
    config: Any = model.config
    check_supported(config)
    for cls in ADAPTERS:
        if config.model_type in cls.model_types:
            return cls(model, processor)
    return GenericAdapter(model, processor)


__all__ = ["ADAPTERS", "Adapter", "AdapterError", "GenericAdapter", "ImagePlacement", "PatchGrid", "TokenMap",
           "adapter_for", "check_supported", "supported_model_types"]
