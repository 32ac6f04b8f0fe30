"""Tiny offline Gemma 3: STUB, being written."""
from __future__ import annotations


def gemma3():
    raise NotImplementedError("gemma3 tiny builder not written yet")
