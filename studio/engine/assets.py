"""Where the studio's shipped assets live: the embedded model, samples, dictionary, steering fit.

One place names the folder, so the rest of the code asks :func:`asset` and never walks up
from its own file.
"""
from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parents[2] / "assets"


def asset(name: str) -> Path:
    """The shipped asset ``name`` (a file or folder under ``assets/``)."""
    return ASSETS / name
