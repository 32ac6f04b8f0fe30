"""Models split over devices: ``--device-map`` and ``--max-memory``, handed to accelerate.

A model too large for one GPU is dispatched by accelerate (through ``from_pretrained``'s
``device_map``): consecutive decoder layers on different GPUs, or on the CPU, or offloaded to
disk and moved in by accelerate's hooks as each layer runs. The studio's own hooks (every
:class:`~studio.interventions.Intervention`) are forward hooks on the same modules, so they run
wherever the layer runs; what they capture is moved to the session's device before it is
stacked. Inputs go to the device of the first layer that computes (:func:`input_device`).

- ``device_map``: ``auto``, ``balanced``, ``balanced_low_0``, ``sequential`` (accelerate's
  strategies) or a JSON file mapping module names to devices (``0``, ``"cuda:1"``, ``"cpu"``,
  ``"disk"``);
- ``max_memory``: ``"0=20GiB,1=20GiB,cpu=64GiB"``: a budget per device, the rest offloaded to
  disk (into a temporary folder of the session).
"""
from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from studio.engine.errors import ModelLoadError

STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
SIZE = re.compile(r"^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KIB|MIB|GIB|TIB)$", re.IGNORECASE)


def _check_device(name: Any, origin: str) -> Any:
    """``name`` if it names a device this machine has (or ``disk``), else a ModelLoadError."""
    text = str(name)
    if text in ("cpu", "disk"):
        return name
    index = int(text) if text.isdigit() else int(text[5:]) if re.fullmatch(r"cuda:\d+", text) else None
    if index is None and text == "mps":
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return name
        raise ModelLoadError(f"{origin} names device 'mps', which this machine does not have")
    if index is None:
        raise ModelLoadError(f"{origin} names device {text!r}; use a GPU index (0, cuda:1), cpu, mps or disk")
    if index >= torch.cuda.device_count():
        raise ModelLoadError(f"{origin} names GPU {index}, but this machine has {torch.cuda.device_count()} GPU(s)")
    return name


def parse_device_map(text: str) -> str | dict[str, Any]:
    """A strategy name, or the JSON file's module -> device mapping (devices checked)."""
    if text in STRATEGIES:
        return text
    path = Path(text)
    if not path.is_file():
        raise ModelLoadError(f"--device-map {text!r} is neither one of {', '.join(STRATEGIES)} nor a JSON file")
    try:
        mapping = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelLoadError(f"--device-map {path} is not JSON: {err}") from None
    if not isinstance(mapping, dict) or not mapping:
        raise ModelLoadError(f"--device-map {path} must map module names to devices")
    return {str(k): _check_device(v, f"--device-map {path}") for k, v in mapping.items()}


def parse_max_memory(text: str) -> dict[Any, str]:
    """``"0=20GiB,cpu=64GiB"`` -> ``{0: "20GiB", "cpu": "64GiB"}`` (devices and sizes checked)."""
    out: dict[Any, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, size = part.partition("=")
        if not sep or not SIZE.match(size.strip()):
            raise ModelLoadError(f"--max-memory {part!r} is not DEVICE=SIZE (e.g. 0=20GiB or cpu=64GiB)")
        device = _check_device(int(key) if key.strip().isdigit() else key.strip(), "--max-memory")
        out[device] = size.strip()
    if not out:
        raise ModelLoadError("--max-memory is empty; give DEVICE=SIZE pairs, e.g. 0=20GiB,cpu=64GiB")
    return out


@dataclass
class Placement:
    """How to split a model: accelerate's ``device_map`` and ``max_memory``; an offload folder is
    made when one is needed (a budget is given, or the map names ``disk``)."""

    device_map: str | dict[str, Any] | None = None
    max_memory: dict[Any, str] | None = None
    offload_folder: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, device_map: str | None, max_memory: str | None) -> Placement | None:
        if device_map is None and max_memory is None:
            return None
        return cls(parse_device_map(device_map or "auto"), parse_max_memory(max_memory) if max_memory else None)

    def from_pretrained_kwargs(self) -> dict[str, Any]:
        if self.offload_folder is None:
            self.offload_folder = tempfile.mkdtemp(prefix="vlm-studio-offload-")
        kwargs: dict[str, Any] = {"device_map": self.device_map, "offload_folder": self.offload_folder}
        if self.max_memory is not None:
            kwargs["max_memory"] = self.max_memory
        return kwargs


def check_dispatched(model: torch.nn.Module) -> None:
    """A ModelLoadError when the budget left no layer on a computing device (all on disk)."""
    devices = set(getattr(model, "hf_device_map", {}).values())
    if devices and devices <= {"disk"}:
        raise ModelLoadError("--max-memory leaves no room for any layer on a GPU or the CPU (everything would run "
                             "from disk); raise the budget")


def input_device(model: torch.nn.Module) -> str:
    """Where inputs go for a dispatched model: the device of its first computing module (the
    execution device of an offloaded one is the CPU, or the first GPU)."""
    devices = [d for d in getattr(model, "hf_device_map", {}).values() if d != "disk"]
    first = devices[0] if devices else "cpu"
    return f"cuda:{first}" if isinstance(first, int) else str(first)


def weight_of(module: torch.nn.Module, name: str = "weight") -> torch.Tensor:
    """``module``'s parameter ``name`` with its values, also when accelerate offloaded it (the module
    then holds a meta tensor and its hook the weights)."""
    value = getattr(module, name)
    if value.device.type != "meta":
        return value
    weights = getattr(getattr(module, "_hf_hook", None), "weights_map", None)
    if weights is None:
        raise ModelLoadError(f"{type(module).__name__}.{name} is offloaded and its weights cannot be read")
    return weights[name]
