"""Where the studio's shipped assets live: the embedded model, samples, dictionary, steering fit.

They are package data of :mod:`studio` (``studio/assets/``), found through
:mod:`importlib.resources`, so an editable install, a wheel installed into site-packages and
a Space's copy all find them beside the code that reads them. One place names the folder, so
the rest of the code asks :func:`asset` and never walks up from its own file.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

# A regular (directory) install makes the resource a real folder, so it is used as a Path:
# the model loader, safetensors and PIL read files by name. The studio is not zip-safe.
ASSETS = Path(str(resources.files("studio") / "assets"))


def asset(name: str) -> Path:
    """The shipped asset ``name`` (a file or folder under ``studio/assets/``)."""
    return ASSETS / name
