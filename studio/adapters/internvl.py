"""InternVL: STUB, being written (image-token geometry not yet implemented)."""
from __future__ import annotations

from studio.adapters.base import Adapter


class InternVLAdapter(Adapter):
    family = "internvl"
    model_types = ('internvl',)
