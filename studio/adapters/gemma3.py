"""Gemma 3: STUB, being written (image-token geometry not yet implemented)."""
from __future__ import annotations

from studio.adapters.base import Adapter


class Gemma3Adapter(Adapter):
    family = "gemma3"
    model_types = ('gemma3',)
