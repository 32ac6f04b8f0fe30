"""Tiny offline Qwen3-VL: STUB, being written."""
from __future__ import annotations


def qwen3_vl():
    raise NotImplementedError("qwen3_vl tiny builder not written yet")
