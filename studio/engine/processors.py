"""Load a model's processor, including families whose stock loader needs torchvision.

``AutoProcessor`` round-trips most families. Qwen2-VL / Qwen2.5-VL / Qwen3-VL, InternVL and
LLaVA-OneVision processors insist on a video processor, which cannot be built without
torchvision, and the library's Pixtral processor module imports torchvision outright; for those
an image-only (or PIL-only) processor is loaded from the same saved files (tokenizer,
image-processor settings, chat template). Each saves under the library's class name, so
``AutoProcessor`` loads the library's own class wherever torchvision is installed.
"""
from __future__ import annotations

import json
from pathlib import Path

from transformers import (
    AutoProcessor,
    BaseImageProcessor,
    InternVLProcessor,
    LlavaOnevisionProcessor,
    PixtralImageProcessorPil,
    PreTrainedTokenizerFast,
    ProcessorMixin,
    Qwen2_5_VLProcessor,
    Qwen2VLProcessor,
    Qwen3VLProcessor,
)


class ImageOnlyProcessorMixin:
    """Drops ``video_processor`` from a processor (Qwen-VL, InternVL) that cannot build one without
    torchvision.

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


class Qwen3VLImageOnlyProcessor(ImageOnlyProcessorMixin, Qwen3VLProcessor):
    """``Qwen3VLProcessor`` for images and text only."""

    saved_as = Qwen3VLProcessor.__name__


class InternVLImageOnlyProcessor(ImageOnlyProcessorMixin, InternVLProcessor):
    """``InternVLProcessor`` for images and text only.

    ``image_seq_length`` (tokens per tile) is named in the signature because ``ProcessorMixin``
    saves and reloads only the ``__init__`` arguments it can see.
    """

    saved_as = InternVLProcessor.__name__

    def __init__(self, image_processor: BaseImageProcessor | None = None,
                 tokenizer: PreTrainedTokenizerFast | None = None, image_seq_length: int = 256,
                 chat_template: str | None = None, **kwargs) -> None:
        super().__init__(image_processor, tokenizer, chat_template=chat_template, image_seq_length=image_seq_length,
                         **kwargs)


class LlavaOnevisionImageOnlyProcessor(ImageOnlyProcessorMixin, LlavaOnevisionProcessor):
    """``LlavaOnevisionProcessor`` for images and text only (it wants a torchvision video processor).
    """

    saved_as = LlavaOnevisionProcessor.__name__

    def __init__(self, image_processor: BaseImageProcessor | None = None,
                 tokenizer: PreTrainedTokenizerFast | None = None, num_image_tokens: int | None = None,
                 vision_feature_select_strategy: str | None = None, chat_template: str | None = None,
                 image_token: str = "<image>", video_token: str = "<video>",
                 vision_aspect_ratio: str = "anyres_max_9", **kwargs) -> None:
        """The library's arguments named in the signature: ``ProcessorMixin`` saves and reloads
        only the ``__init__`` arguments it can see."""
        super().__init__(
            image_processor, tokenizer, chat_template=chat_template, num_image_tokens=num_image_tokens,
            vision_feature_select_strategy=vision_feature_select_strategy, image_token=image_token,
            video_token=video_token, vision_aspect_ratio=vision_aspect_ratio, **kwargs)


class PixtralPilProcessor(ProcessorMixin):
    """``PixtralProcessor`` without torchvision (the library's module imports it unconditionally).

    Same expansion as the library's: ``[IMG]`` per token row by row, ``[IMG_BREAK]`` closing
    each row and ``[IMG_END]`` replacing the last one; the image processor is told the
    token's pixel step (``patch_size * spatial_merge_size``). Saved as ``PixtralProcessor``, so
    ``AutoProcessor`` loads the library's class wherever torchvision is installed.
    """

    saved_as = "PixtralProcessor"

    def __init__(self, image_processor: PixtralImageProcessorPil | None = None,
                 tokenizer: PreTrainedTokenizerFast | None = None, patch_size: int = 16,
                 spatial_merge_size: int = 1, chat_template: str | None = None, image_token: str = "[IMG]",
                 image_break_token: str = "[IMG_BREAK]", image_end_token: str = "[IMG_END]", **kwargs) -> None:
        super().__init__(image_processor, tokenizer, chat_template=chat_template)
        self.patch_size = patch_size
        self.spatial_merge_size = spatial_merge_size
        self.image_token, self.image_break_token, self.image_end_token = image_token, image_break_token, image_end_token
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(image_token)
        self.image_token_ids = [self.image_token_id, *self.tokenizer.convert_tokens_to_ids(
            [image_break_token, image_end_token])]

    def _process_images(self, images, **kwargs):
        kwargs["patch_size"] = self.patch_size * self.spatial_merge_size
        return super()._process_images(images, **kwargs)

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        """The image-stream text of one image: rows of ``[IMG]`` joined by breaks, then the end."""
        step = self.patch_size * self.spatial_merge_size
        height, width = (int(v) for v in image_inputs["image_sizes"][image_idx])
        rows = [self.image_token * (width // step)] * (height // step)
        return self.image_break_token.join(rows) + self.image_end_token

    def to_dict(self) -> dict:
        """The processor's saved settings, naming the library's class as ``processor_class``."""
        return {**super().to_dict(), "processor_class": self.saved_as}


IMAGE_ONLY: dict[str, type[ProcessorMixin]] = {
    cls.saved_as: cls for cls in (Qwen2VLImageOnlyProcessor, Qwen2_5_VLImageOnlyProcessor, Qwen3VLImageOnlyProcessor,
                                  InternVLImageOnlyProcessor, LlavaOnevisionImageOnlyProcessor, PixtralPilProcessor)}


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
