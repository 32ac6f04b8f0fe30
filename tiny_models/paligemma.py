"""Tiny offline PaliGemma 1 and 2: STUB, being written."""
from __future__ import annotations


def paligemma():
    raise NotImplementedError("paligemma tiny builder not written yet")
