"""Ctrl-C that always ends a command.

Python raises ``KeyboardInterrupt`` in whatever code runs when SIGINT arrives. When that code is
a finalizer (a ``__del__`` method, a weakref callback, a generator closed by the garbage
collector), Python prints "Exception ignored" and carries on, so a long job (a dictionary's
activation collection, a benchmark) could outlive the user's Ctrl-C by hours. Within
:func:`repeated_interrupts`, the first SIGINT raises ``KeyboardInterrupt`` as usual and also
arms an interval timer whose SIGALRM raises it again every ``REPEAT_SECONDS`` until the command
has ended: a swallowed interrupt is followed by another, in ordinary code, a moment later.
"""
from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

REPEAT_SECONDS = 2.0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    signal.setitimer(signal.ITIMER_REAL, REPEAT_SECONDS, REPEAT_SECONDS)
    raise KeyboardInterrupt


@contextmanager
def repeated_interrupts() -> Iterator[None]:
    """Within the block, an interrupt repeats until it ends the block (see the module's docstring).
    Outside the main thread, or where the platform has no interval timer, the block runs as is."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return
    previous = signal.signal(signal.SIGINT, _interrupt), signal.signal(signal.SIGALRM, _interrupt)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGALRM, previous[1])
