"""Request-scoped module hooks: the one low-level place where the studio touches the model.

Hooks are added inside a context manager and removed in ``finally``; nested contexts remove
only their own. Each context also carries a request token in a ``ContextVar``: a hook runs
its body only when the forward pass happens inside the context that added it, so a pass
served for another request (another thread, another user) never sees it, even while both
are in flight on one shared model.

Code outside the engine does not call this module: it states what it wants as
:class:`studio.interventions.Intervention` values, which are applied through here.
"""
from __future__ import annotations

import contextvars
import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

_ACTIVE: contextvars.ContextVar[frozenset[int]] = contextvars.ContextVar("studio_active_hooks", default=frozenset())
_TOKENS = itertools.count(1)

Hook = Callable[..., object]


@dataclass(frozen=True)
class HookSpec:
    """One hook: ``kind`` "forward" calls ``fn(module, args, output)`` after the module runs (a
    returned value replaces the output); "pre" calls ``fn(module, args, kwargs)`` before it (a
    returned ``(args, kwargs)`` pair replaces the inputs)."""

    module: nn.Module
    fn: Hook
    kind: Literal["forward", "pre"] = "forward"


def output_tensor(output: object) -> torch.Tensor:
    """The hidden-state tensor of a module output (a tensor, or the first item of a tuple)."""
    return output[0] if isinstance(output, tuple) else output  # type: ignore[return-value]


@contextmanager
def scoped_hooks(specs: list[HookSpec]) -> Iterator[None]:
    """Add the hooks for the duration of the block, scoped to the current request."""
    token = next(_TOKENS)

    def scoped(fn: Hook) -> Hook:
        def hook(*args: object) -> object:
            if token in _ACTIVE.get():
                return fn(*args)
            return None
        return hook

    handles = []
    reset = _ACTIVE.set(_ACTIVE.get() | {token})
    try:
        for spec in specs:
            if spec.kind == "pre":
                handles.append(spec.module.register_forward_pre_hook(scoped(spec.fn), with_kwargs=True))
            else:
                handles.append(spec.module.register_forward_hook(scoped(spec.fn)))
        yield
    finally:
        for handle in handles:
            handle.remove()
        _ACTIVE.reset(reset)


def hook_count(model: nn.Module) -> int:
    """How many forward / pre-forward / backward hooks are registered anywhere in ``model``."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())
