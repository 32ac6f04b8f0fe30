"""Named errors whose message is meant for the person using the studio.

Every error the app shows or the CLI prints as its one line is a ``StudioError``; anything
else is a bug and surfaces as one.
"""
from __future__ import annotations


class StudioError(Exception):
    """A problem the user can act on; ``str(err)`` is one readable sentence."""


class InputError(StudioError, ValueError):
    """An image, prompt or parameter that cannot be used as given."""


class ModelLoadError(StudioError):
    """A model that cannot be loaded: unknown id, missing or unsafe weights, offline."""


class ResourceError(StudioError):
    """The machine ran out of something (e.g. GPU memory) while serving a request."""
