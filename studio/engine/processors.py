"""Load a model's processor, including families whose stock loader needs torchvision.

``AutoProcessor`` round-trips most families. Qwen2-VL / Qwen2.5-VL processors insist on a
video processor, which cannot be built without torchvision; for those an image-only
processor is loaded from the same saved files (tokenizer, image-processor settings, chat
template).
"""
from __future__ import annotations

import json
from pathlib import Path

from transformers import (
    AutoProcessor,
    BaseImageProcessor,
    PreTrainedTokenizerFast,
    Qwen2_5_VLProcessor,
    Qwen2VLProcessor,
)


class ImageOnlyProcessorMixin:
    """Drops ``video_processor`` from a Qwen-VL processor, which cannot build one without torchvision.

    ``ProcessorMixin`` reads the sub-processors from the ``__init__`` signature, so leaving
    ``video_processor`` out of it leaves image processor and tokenizer. ``processor_config.json``
    names the standard class (``saved_as``), so ``AutoProcessor`` loads a saved folder as the full
    processor where torchvision is installed (and fails for want of a video processor where it is
    not), while the image-only subclass's ``from_pretrained`` loads it anywhere.
    """

    saved_as: str

    def __init__(self, image_processor: BaseImageProcessor | None = None,
                 tokenizer: PreTrainedTokenizerFast | None = None, chat_template: str | None = None,
                 **kwargs) -> None:
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template,  # type: ignore[call-arg]
                         **kwargs)

    def to_dict(self) -> dict:
        """The processor's saved settings, naming the standard class as ``processor_class``."""
        return {**super().to_dict(), "processor_class": self.saved_as}  # type: ignore[misc]


class Qwen2VLImageOnlyProcessor(ImageOnlyProcessorMixin, Qwen2VLProcessor):
    """``Qwen2VLProcessor`` for images and text only."""

    saved_as = Qwen2VLProcessor.__name__


class Qwen2_5_VLImageOnlyProcessor(ImageOnlyProcessorMixin, Qwen2_5_VLProcessor):
    """``Qwen2_5_VLProcessor`` for images and text only."""

    saved_as = Qwen2_5_VLProcessor.__name__


IMAGE_ONLY = {cls.saved_as: cls for cls in (Qwen2VLImageOnlyProcessor, Qwen2_5_VLImageOnlyProcessor)}


def load_processor(where: str, **kwargs):
    """The processor saved with the model at ``where`` (folder or Hub id)."""
    cls = IMAGE_ONLY.get(_saved_class(where) or "")
    if cls is not None and not _video_processing_available():
        return cls.from_pretrained(where, **kwargs)
    return AutoProcessor.from_pretrained(where, **kwargs)


def _saved_class(where: str) -> str | None:
    for name in ("processor_config.json", "preprocessor_config.json"):
        path = Path(where) / name
        if path.is_file():
            return json.loads(path.read_text()).get("processor_class")
    return None


def _video_processing_available() -> bool:
    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError):
        return False
    return True
