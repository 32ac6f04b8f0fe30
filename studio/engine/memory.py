"""Handing freed heap memory back to the system on CPU.

glibc's allocator keeps freed blocks below its mmap threshold in its heap, and raises that
threshold (up to 32 MB) each time a larger block is freed: after a few passes, tensors of a few
MB come from the heap, and a pattern of such blocks that does not repeat exactly (one tile's
activations, then the next's) grows the process's resident memory by what it freed, not by what
it holds. ``malloc_trim`` returns the free pages of the heap to the system. Elsewhere than glibc
this does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _trim():
    name = ctypes.util.find_library("c")
    library = ctypes.CDLL(name) if name else None
    return getattr(library, "malloc_trim", None)


def release_heap() -> None:
    """Return the heap's free pages to the system (glibc's ``malloc_trim(0)``; elsewhere nothing)."""
    trim = _trim()
    if trim is not None:
        trim(0)
