"""Pieces every tab of the app shares: error display and temporary image files."""
from __future__ import annotations

import functools
import tempfile

import gradio as gr

from studio.errors import StudioError


def user_errors(handler):
    """Show StudioErrors as a gr.Error message instead of a crash."""
    @functools.wraps(handler)
    def wrapped(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except StudioError as err:
            raise gr.Error(str(err), print_exception=False) from None
    return wrapped


def save_png(image) -> str:
    """Write ``image`` to a temporary PNG (what Gradio serves) and return its path."""
    handle = tempfile.NamedTemporaryFile(prefix="vlm-studio-", suffix=".png", delete=False)
    image.save(handle, format="PNG")
    handle.close()
    return handle.name
