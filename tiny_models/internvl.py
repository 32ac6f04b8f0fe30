"""Tiny offline InternVL: STUB, being written."""
from __future__ import annotations


def internvl():
    raise NotImplementedError("internvl tiny builder not written yet")
