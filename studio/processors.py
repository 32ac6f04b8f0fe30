"""Load a model's processor, including families whose stock loader needs torchvision.

``AutoProcessor`` round-trips most families. Qwen2-VL / Qwen2.5-VL processors insist on a
video processor, which cannot load without torchvision; for those an image-only processor
is rebuilt from the saved tokenizer, image-processor config and chat template.
"""
from __future__ import annotations

from transformers import AutoProcessor


def load_processor(where: str, **kwargs):
    """The processor saved with the model at ``where`` (folder or Hub id)."""
    return AutoProcessor.from_pretrained(where, **kwargs)
