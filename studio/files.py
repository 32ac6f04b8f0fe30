"""Writing files so that nothing is ever left half-written: a temporary name, then a rename."""
from __future__ import annotations

import json
from pathlib import Path


def atomic_write(path: str | Path, payload: bytes) -> Path:
    """Write ``payload`` to ``path`` via a temporary file in the same folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(payload)
    tmp.replace(path)
    return path


def atomic_write_json(path: str | Path, payload) -> Path:
    return atomic_write(path, json.dumps(payload, indent=1).encode())
