"""LLaVA-OneVision: STUB, being written (image-token geometry not yet implemented)."""
from __future__ import annotations

from studio.adapters.base import Adapter


class LlavaOnevisionAdapter(Adapter):
    family = "llava_onevision"
    model_types = ('llava_onevision',)
