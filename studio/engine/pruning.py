"""Removing positions of some batch rows from the deeper decoder layers in the prompt pass:
the engine side of the ``kept_positions`` intervention site (SID's token dropping).

From layer ``start`` on, the prompt pass computes the chosen rows only at their kept positions:
each such layer runs twice, once over the other rows as they are and once over the chosen rows
gathered to their kept positions (states, rotary embeddings, position ids and mask gathered
alike), so the removed positions cost nothing there. Between layers the batch keeps its full
shape: a removed position's state passes through unchanged and is never read again. The layer's
cache receives every row's keys and values at full length, the removed positions' as zeros: the
later steps of a generation must mask them (SID does, with the ``attention_mask`` site), and in
return the rows keep sharing one batch and one cache for every generated step.

Scoping: the layer's ``forward`` is replaced by a dispatcher while at least one request prunes
it (counted under a lock), and the dispatcher finds this request's pruning in a ``ContextVar``,
so a pass served for another request runs the layer as it is. Removed in ``finally``.
"""
from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from studio.engine.errors import StudioError

Kept = Callable[[torch.Tensor], torch.Tensor]
_PRUNED: contextvars.ContextVar[dict[int, tuple[Pruning, bool]] | None] = contextvars.ContextVar(
    "studio_pruned_layers", default=None)
_LOCK = threading.Lock()
_INSTALLED: dict[int, list] = {}  # id(layer) -> [requests using it, the forward it replaced or None]


@dataclass
class Pruning:
    """Rows ``rows`` computed at the positions ``kept`` returns, from the first pruned layer on,
    while ``applies()`` holds. ``kept`` receives those rows' states entering the first pruned
    layer ([rows, L, d]) and returns each row's kept positions, ascending ([rows, K])."""

    rows: tuple[int, ...]
    kept: Kept
    applies: Callable[[], bool]
    index: torch.Tensor | None = field(default=None, init=False)

    def run(self, forward: Callable, first: bool, args: tuple, kwargs: dict) -> torch.Tensor:
        """One pruned layer's output [B, L, d] for the full batch."""
        hidden = args[0] if args else kwargs.pop("hidden_states")
        if len(args) > 1:
            raise StudioError("a pruned decoder layer takes its inputs other than the states by keyword")
        rows = list(self.rows)
        others = [i for i in range(hidden.shape[0]) if i not in self.rows]
        if first:
            self.index = _checked_index(self.kept(hidden[rows]), len(rows), hidden.shape[1]).to(hidden.device)
        index = self.index
        if index is None:
            raise StudioError("a pruned layer ran before the first pruned layer chose the kept positions")
        cache = kwargs.pop("cache", None)
        whole, part = _Recorder(), _Recorder()
        out_whole = _tensor(forward(hidden[others], cache=whole if cache is not None else None,
                                    **_taken(kwargs, others, None))) if others else hidden[others]
        out_part = _tensor(forward(_along(hidden[rows], index, 1), cache=part if cache is not None else None,
                                   **_taken(kwargs, rows, index)))
        if cache is not None:
            if part.keys is None or part.values is None:
                raise StudioError("a pruned layer's attention did not hand its keys and values to the cache")
            if cache.get_seq_length(part.layer_idx) > 0:
                raise StudioError("positions can be removed only in the prompt pass, with an empty cache")
            length = hidden.shape[1]
            cache.update(_merged(whole.keys, part.keys, index, rows, others, length),
                         _merged(whole.values, part.values, index, rows, others, length), part.layer_idx)
        out = hidden.clone()  # on the device the states came from (a split model's layer may compute elsewhere)
        out[others] = out_whole.to(hidden.device)
        out[rows] = hidden[rows].scatter(1, index[..., None].expand(-1, -1, hidden.shape[-1]),
                                         out_part.to(hidden.device))
        return out


class _Recorder:
    """Stands in for the cache in one part of a pruned layer: keeps the keys and values the
    attention computes and gives them back, as an empty cache layer does."""

    keys: torch.Tensor | None = None
    values: torch.Tensor | None = None
    layer_idx: int = 0

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, *args, **kwargs):
        self.keys, self.values, self.layer_idx = keys, values, layer_idx
        return keys, values


def _checked_index(index: torch.Tensor, rows: int, length: int) -> torch.Tensor:
    if index.dim() != 2 or index.shape[0] != rows or index.dtype != torch.long:
        raise StudioError(f"kept positions must be a [{rows}, K] long tensor; got {tuple(index.shape)} {index.dtype}")
    if index.numel() and (index.min() < 0 or index.max() >= length or (index.diff(dim=1) <= 0).any()):
        raise StudioError(f"kept positions must be ascending and within 0..{length - 1}")
    return index


def _tensor(output: object) -> torch.Tensor:
    if isinstance(output, tuple):
        if len(output) != 1:
            raise StudioError("a pruned decoder layer must return only its states")
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise StudioError(f"a decoder layer returned {type(output).__name__}, not its states")
    return output


def _along(value: torch.Tensor, index: torch.Tensor, dim: int) -> torch.Tensor:
    """``value`` [R, ...] gathered at each row's ``index`` [R, K] along ``dim``."""
    shape = [1] * value.dim()
    shape[0], shape[dim] = index.shape
    return value.gather(dim, index.view(shape).expand(*value.shape[:dim], index.shape[1], *value.shape[dim + 1:]))


def _rows(value: torch.Tensor, rows: list[int]) -> torch.Tensor:
    return value.expand(max(rows) + 1, *value.shape[1:])[rows] if value.shape[0] == 1 else value[rows]


def _taken(kwargs: dict, rows: list[int], index: torch.Tensor | None) -> dict:
    """The layer's keyword inputs for ``rows``, gathered at ``index`` when given."""
    out: dict[str, object] = {}
    for key, value in kwargs.items():
        if key == "position_embeddings":
            parts = [_rows(t, rows) for t in value]
            out[key] = tuple(parts if index is None else [_along(t, index, 1) for t in parts])
        elif key == "position_ids" and value is not None:
            out[key] = _rows(value, rows) if index is None else _along(_rows(value, rows), index, 1)
        elif key == "attention_mask" and value is not None:
            mask = _rows(value, rows)
            out[key] = mask if index is None else _along(_along(mask, index, 2), index, 3)
        elif isinstance(value, torch.Tensor) or (isinstance(value, (tuple, list)) and value
                                                 and isinstance(value[0], torch.Tensor)):
            raise StudioError(f"a pruned decoder layer received {key!r}, which the studio cannot gather: "
                              "this family does not support removing positions")
        else:
            out[key] = value
    return out


def _merged(whole: torch.Tensor | None, part: torch.Tensor, index: torch.Tensor, rows: list[int],
            others: list[int], length: int) -> torch.Tensor:
    """Keys or values [B, H, length, d]: ``whole`` for ``others``, ``part`` scattered at ``index``
    and zeros elsewhere for ``rows``."""
    batch, index = len(rows) + len(others), index.to(part.device)
    out = part.new_zeros(batch, part.shape[1], length, part.shape[3])
    if whole is not None:
        out[others] = whole.to(part.device)
    out[rows] = out[rows].scatter(2, index[:, None, :, None].expand(-1, part.shape[1], -1, part.shape[3]), part)
    return out


def _dispatcher(layer: nn.Module, original: Callable) -> Callable:
    def forward(*args, **kwargs):
        entry = (_PRUNED.get() or {}).get(id(layer))
        if entry is None or not entry[0].applies():
            return original(*args, **kwargs)
        return entry[0].run(original, entry[1], args, kwargs)
    return forward


@contextmanager
def pruned(layers: Sequence[nn.Module], pruning: Pruning) -> Iterator[None]:
    """Within the block, ``layers`` (the first one chooses the kept positions) run ``pruning`` for
    this request."""
    entries = {id(layer): (pruning, i == 0) for i, layer in enumerate(layers)}
    reset = _PRUNED.set({**(_PRUNED.get() or {}), **entries})
    installed = []
    try:
        for layer in layers:
            _install(layer)
            installed.append(layer)
        yield
    finally:
        for layer in installed:
            _uninstall(layer)
        _PRUNED.reset(reset)


def _install(layer: nn.Module) -> None:
    with _LOCK:
        entry = _INSTALLED.setdefault(id(layer), [0, layer.__dict__.get("forward")])
        if entry[0] == 0:
            layer.forward = _dispatcher(layer, layer.forward)
        entry[0] += 1


def _uninstall(layer: nn.Module) -> None:
    with _LOCK:
        entry = _INSTALLED[id(layer)]
        entry[0] -= 1
        if entry[0] == 0:
            del _INSTALLED[id(layer)]
            if entry[1] is None:
                del layer.forward
            else:
                layer.forward = entry[1]
