"""Tiny offline Mistral 3 (Pixtral vision tower): STUB, being written."""
from __future__ import annotations


def mistral3():
    raise NotImplementedError("mistral3 tiny builder not written yet")
