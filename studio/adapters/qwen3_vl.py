"""Qwen3-VL: STUB, being written (image-token geometry not yet implemented)."""
from __future__ import annotations

from studio.adapters.base import Adapter


class Qwen3VLAdapter(Adapter):
    family = "qwen3_vl"
    model_types = ('qwen3_vl',)
