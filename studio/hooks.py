"""Request-scoped forward hooks.

Hooks are added inside a context manager and removed in ``finally``; nested contexts remove
only their own. Each context also carries a request token in a ``ContextVar``: a hook runs
its body only when the forward pass happens inside the context that added it, so a pass
served for another request (another thread, another user) never sees it, even while both
are in flight on one shared model.
"""
from __future__ import annotations

import contextvars
import itertools
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

_ACTIVE: contextvars.ContextVar[frozenset[int]] = contextvars.ContextVar("studio_active_hooks", default=frozenset())
_TOKENS = itertools.count(1)

Hook = Callable[[nn.Module, tuple, object], object]


def output_tensor(output: object) -> torch.Tensor:
    """The hidden-state tensor of a module output (a tensor, or the first item of a tuple)."""
    return output[0] if isinstance(output, tuple) else output


@contextmanager
def forward_hooks(pairs: list[tuple[nn.Module, Hook]]) -> Iterator[None]:
    """Add forward hooks for the duration of the block, scoped to the current request."""
    token = next(_TOKENS)

    def scoped(fn: Hook) -> Hook:
        def hook(module: nn.Module, args: tuple, output: object) -> object:
            if token in _ACTIVE.get():
                return fn(module, args, output)
            return None
        return hook

    handles = []
    reset = _ACTIVE.set(_ACTIVE.get() | {token})
    try:
        for module, fn in pairs:
            handles.append(module.register_forward_hook(scoped(fn)))
        yield
    finally:
        for handle in handles:
            handle.remove()
        _ACTIVE.reset(reset)


def hook_count(model: nn.Module) -> int:
    """How many forward / pre-forward / backward hooks are registered anywhere in ``model``."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())
