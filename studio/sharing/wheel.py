"""Build the studio's wheel from the checkout it runs from, without touching that checkout.

The wheel holds the four packages and their package data (``studio/assets``: the embedded
model, samples, dictionary and steering fit), so an install from it needs no source tree. It
is built offline, from a copy of the checkout in a temporary folder (setuptools writes
``build/`` and ``*.egg-info`` beside the sources), with the setuptools already installed here:
``pip wheel --no-deps --no-build-isolation``.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from studio.engine.errors import StudioError
from studio.sharing.environment import checkout

PACKAGES = ("studio", "probes", "views", "vlm_studio")
FILES = ("pyproject.toml", "README.md", "MANIFEST.in")


def copy_source(root: Path, dest: Path) -> Path:
    """Copy what a build reads from the checkout ``root`` (the packages, pyproject.toml, README.md,
    MANIFEST.in; no caches) into the new folder ``dest``."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    dest.mkdir(parents=True)
    for package in PACKAGES:
        shutil.copytree(root / package, dest / package, ignore=ignore)
    for name in FILES:
        shutil.copy2(root / name, dest / name)
    return dest


def build_wheel(out_dir: Path) -> Path:
    """Build the studio's wheel into ``out_dir`` from the checkout the studio runs from; the
    wheel's path. A StudioError when the studio is installed (no checkout) or the build fails."""
    root = checkout()
    if root is None:
        raise StudioError("the studio runs from an installed wheel, not a checkout, so it cannot build one: "
                          "pass the wheel with --wheel (e.g. from `pip download vlm-studio --no-deps`)")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vlm-studio-build-") as tmp:
        source = copy_source(root, Path(tmp) / "source")
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                               "--wheel-dir", str(out_dir), str(source)], capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise StudioError(f"building the studio's wheel failed (it needs setuptools>=77 installed here): {last[0]}")
    return next(out_dir.glob("vlm_studio-*.whl"))
