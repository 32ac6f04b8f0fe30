"""PaliGemma 1 and 2: STUB, being written (image-token geometry not yet implemented)."""
from __future__ import annotations

from studio.adapters.base import Adapter


class PaliGemmaAdapter(Adapter):
    family = "paligemma"
    model_types = ('paligemma',)
