"""Model calls on Hugging Face ZeroGPU hardware, where a GPU is lent only to ``spaces.GPU`` functions.

A ZeroGPU Space has no GPU of its own: the ``spaces`` package lends one to a function marked with
``spaces.GPU`` for the length of each call. :meth:`ModelSession.call` is the one place every
model call of the studio passes (probes, interventions, decoding, training-free methods), so it
hands its body to :func:`on_gpu`, which runs it inside such a function when ``spaces`` is
importable and reports ZeroGPU (``spaces.config.Config.zero_gpu``, set from the
``SPACES_ZERO_GPU`` variable Spaces defines), and calls it directly everywhere else.

On the hardware ``spaces.GPU`` runs its function in a forked worker and pickles the arguments
across, except when it is already inside a worker, where it runs the function in place. A
body is a closure over the request, so the Space app also lets ``spaces`` wrap every Gradio
event (:data:`studio.sharing.space.APP`): each event then runs in the worker, and the call-level
function here runs in place inside it.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def active() -> bool:
    """Whether this process runs on ZeroGPU hardware (``spaces`` importable and reporting it)."""
    try:
        config = importlib.import_module("spaces.config")
    except ImportError:
        return False
    return bool(config.Config.zero_gpu)


def _run(body: Callable[[], T]) -> T:
    return body()


def on_gpu(body: Callable[[], T]) -> T:
    """``body()``, inside a ``spaces.GPU`` function on ZeroGPU hardware, directly elsewhere."""
    if not active():
        return body()
    import spaces
    return spaces.GPU(_run)(body)
