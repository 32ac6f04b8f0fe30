"""Mistral 3 (Pixtral vision tower): STUB, being written (image-token geometry not yet implemented)."""
from __future__ import annotations

from studio.adapters.base import Adapter


class Mistral3Adapter(Adapter):
    family = "mistral3"
    model_types = ('mistral3',)
