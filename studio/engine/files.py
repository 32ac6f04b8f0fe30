"""Writing files so that nothing is ever left half-written: a temporary name, then a rename."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from studio.engine.errors import InputError


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


def staging_dir(out: str | Path) -> Path:
    """A fresh temporary folder beside ``out`` (same file system, so it can be renamed onto it)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o755)
    return staging


def replace_dir(staging: Path, out: str | Path) -> Path:
    """Move the finished ``staging`` folder to ``out``, replacing what was there."""
    out = Path(out)
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old)
    else:
        os.replace(staging, out)
    return out


@contextmanager
def building_dir(out: str | Path, force: bool = False) -> Iterator[Path]:
    """A staging folder that replaces ``out`` when the block finishes, and is removed if it
    fails; ``out`` must be absent or empty unless ``force``."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise InputError(f"{out} exists and is not empty; pass --force to replace it")
    try:
        staging = staging_dir(out)
    except OSError as err:
        raise InputError(f"cannot write to {out.parent}: {err.strerror}") from None
    try:
        yield staging
        replace_dir(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
