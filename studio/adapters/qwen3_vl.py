"""Qwen3-VL: the Qwen2-VL token geometry (one row-major grid of 2x2-merged patches covering the
whole smart-resized image; each row of ``pixel_values`` one patch, merged blocks consecutive), so
it takes :class:`Qwen2VLAdapter`'s two geometry methods. (It borrows them rather than subclass:
mypy types ``Qwen2VLAdapter.model_types`` as a 2-tuple, which a 1-tuple cannot override.)

Its text model keeps the common layout (``model.model.language_model.layers`` / ``.norm``,
``model.lm_head``) and its interleaved M-RoPE positions are computed inside the model from
``image_grid_thw`` and ``mm_token_type_ids``, so neither needs anything here. DeepStack adds
visual features from intermediate vision layers to the image positions after each of the first
``len(vision_config.deepstack_visual_indexes)`` decoder layers, outside the layer modules: the
"residual" read at those layers is the layer's output before that addition (text positions are
unaffected, and the next layer reads the sum).
"""
from __future__ import annotations

from studio.adapters.base import Adapter
from studio.adapters.qwen2_vl import Qwen2VLAdapter


class Qwen3VLAdapter(Adapter):
    family = "qwen3_vl"
    model_types = ("qwen3_vl",)
    image_layout = Qwen2VLAdapter.image_layout
    pixel_token_groups = Qwen2VLAdapter.pixel_token_groups
