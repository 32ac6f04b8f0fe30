"""Family adapters, looked up by ``config.model_type``."""
from __future__ import annotations

from torch import nn

from studio.adapters.base import (
    Adapter,
    AdapterError,
    ImagePlacement,
    PatchGrid,
    TokenMap,
)
from studio.adapters.gemma3 import Gemma3Adapter
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
    return sorted(t for a in ADAPTERS for t in a.model_types)


def adapter_for(model: nn.Module, processor=None) -> Adapter:
    """The adapter serving ``model``'s ``config.model_type``; a clear error when none does."""
    model_type = getattr(model.config, "model_type", None)
    for cls in ADAPTERS:
        if model_type in cls.model_types:
            return cls(model, processor)
    raise AdapterError(f"no adapter for model type {model_type!r}; supported: {', '.join(supported_model_types())}."
                       " Add one module in studio/adapters/ to support a new family.")


__all__ = ["ADAPTERS", "Adapter", "AdapterError", "ImagePlacement", "PatchGrid", "TokenMap",
           "adapter_for", "supported_model_types"]
