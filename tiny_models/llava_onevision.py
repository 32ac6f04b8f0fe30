"""Tiny offline LLaVA-OneVision: STUB, being written."""
from __future__ import annotations


def llava_onevision():
    raise NotImplementedError("llava_onevision tiny builder not written yet")
