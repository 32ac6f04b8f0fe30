"""The probe interface: parameters, results, and the base class every probe extends.

In the spirit of captum's ``Attribution``: a probe has a ``name``, a parameter dataclass
validated on construction, capability flags that default to False, and one method,
``run(session, request, params) -> Result``. Results are dataclasses of CPU numpy arrays
(shapes documented on each class) plus plain values, serialisable to JSON or to JSON + .npz.
"""
from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from studio.engine.errors import InputError
from studio.engine.files import atomic_write

RESULT_VERSION = 1
RESULT_TYPES: dict[str, type["ProbeResult"]] = {}


@dataclass(frozen=True)
class ProbeRequest:
    """What to probe: an image (path, bytes or PIL image; None for text-only) and a prompt,
    answered greedily with at most ``max_new_tokens`` new tokens."""

    image: Any
    prompt: str
    max_new_tokens: int = 48


@dataclass(frozen=True)
class ProbeParams:
    """Base of every probe's parameters; subclasses validate in ``__post_init__``."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class ProbeResult:
    """Base of every result: numpy arrays and JSON-able values, version-stamped on save."""

    probe: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.probe:
            RESULT_TYPES[cls.probe] = cls

    def _split(self) -> tuple[dict, dict[str, np.ndarray]]:
        plain, arrays = {}, {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                arrays[f.name] = value
            else:
                plain[f.name] = value
        return plain, arrays

    def to_dict(self) -> dict:
        """Everything as JSON-able data (arrays as nested lists with dtype and shape)."""
        plain, arrays = self._split()
        return {"probe": self.probe, "version": RESULT_VERSION, "values": plain,
                "arrays": {k: {"dtype": str(v.dtype), "shape": list(v.shape), "data": v.tolist()}
                           for k, v in arrays.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> "ProbeResult":
        target = _result_class(data)
        arrays = {k: np.asarray(v["data"], dtype=v["dtype"]).reshape(v["shape"]) for k, v in data["arrays"].items()}
        return target(**data["values"], **arrays)

    def save(self, stem: str | Path) -> tuple[Path, Path]:
        """Write ``stem.json`` (values, version) and ``stem.npz`` (arrays); each via a temp file."""
        stem = Path(stem)
        plain, arrays = self._split()
        meta = {"probe": self.probe, "version": RESULT_VERSION, "values": plain, "arrays": sorted(arrays)}
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
        json_path, npz_path = stem.with_suffix(".json"), stem.with_suffix(".npz")
        atomic_write(npz_path, buf.getvalue())
        atomic_write(json_path, json.dumps(meta).encode())
        return json_path, npz_path

    @classmethod
    def load(cls, stem: str | Path) -> "ProbeResult":
        stem = Path(stem)
        meta = json.loads(stem.with_suffix(".json").read_text())
        with np.load(stem.with_suffix(".npz"), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in meta["arrays"]}
        return _result_class(meta)(**meta["values"], **arrays)


def _result_class(data: dict) -> type[ProbeResult]:
    if data.get("version") != RESULT_VERSION:
        raise InputError(f"result version {data.get('version')} is not {RESULT_VERSION}; re-run the probe")
    try:
        return RESULT_TYPES[data["probe"]]
    except KeyError:
        raise InputError(f"unknown probe result {data.get('probe')!r}") from None


class Probe:
    """One interpretability method. Subclasses set the class attributes and implement ``run``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    params_class: ClassVar[type[ProbeParams]] = ProbeParams
    needs_image: ClassVar[bool] = False
    needs_fit: ClassVar[bool] = False  # reads a file fitted to one model (directions, a dictionary)

    def params(self, **values) -> ProbeParams:
        """Validated parameters from keyword values (unknown names are an error)."""
        known = {f.name for f in fields(self.params_class)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"{self.name} has no parameter(s) {', '.join(unknown)}; "
                             f"it takes {', '.join(sorted(known)) or 'none'}")
        return self.params_class(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    def run(self, session, request: ProbeRequest, params: Any) -> ProbeResult:
        raise NotImplementedError

    def cached_run(self, session, request: ProbeRequest):
        """The request's cached run; probes that ``needs_image`` refuse a prompt without image tokens."""
        from probes.runs import get_run
        run = get_run(session, request)
        if self.needs_image and not run.token_map.image_positions:
            raise InputError(f"the {self.name} probe needs an image: this prompt has no image tokens")
        return run


def check_range(name: str, value: float, low: float, high: float) -> None:
    """An InputError naming the parameter and its valid range when ``value`` is outside it."""
    if not low <= value <= high:
        raise InputError(f"{name} must be between {low} and {high}; got {value}")
