"""What a run was computed with: the studio's version and commit, Python, the key libraries,
the device, the dtype and the model (its source and fingerprint).

Exports store this record beside their results, so a notebook that re-runs them elsewhere can
say which of these differ before anyone compares numbers: a different transformers minor
version or another model explains a digest that moved. The model is identified by the same
fingerprint the concept dictionaries and steering fits check (:func:`model_fingerprint`), so
a folder copied to another path still counts as the same model.
"""
from __future__ import annotations

import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTION = "vlm-studio"
LIBRARIES = ("torch", "transformers", "tokenizers", "safetensors", "numpy", "pillow", "gradio", "plotly", "captum",
             "sae-lens", "scikit-learn", "scipy", "umap-learn")


@dataclass(frozen=True)
class Environment:
    """One run's environment; the session fields are None when no model is involved."""

    studio: str | None
    commit: str | None
    python: str
    libraries: dict[str, str | None] = field(default_factory=dict)
    device: str | None = None
    dtype: str | None = None
    model: str | None = None
    fingerprint: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def checkout() -> Path | None:
    """The source checkout the running studio is imported from, or None for an installed wheel."""
    return ROOT if (ROOT / "pyproject.toml").is_file() and (ROOT / "studio" / "__init__.py").is_file() else None


def version(name: str) -> str | None:
    """The installed version of distribution ``name``, or None when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def commit() -> str | None:
    """The checkout's commit (suffixed ``-dirty`` when tracked files have changes), or None when
    the studio runs from an installed wheel or git is unavailable."""
    root = checkout()
    if root is None or not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        clean = subprocess.run(["git", "-C", str(root), "diff", "--quiet", "HEAD"], capture_output=True).returncode == 0
    except (OSError, subprocess.CalledProcessError):
        return None
    return head if clean else f"{head}-dirty"


def record(session=None) -> Environment:
    """The environment of this process, and of ``session``'s model when one is given."""
    from studio.concepts.activations import model_fingerprint
    model = {} if session is None else {
        "device": str(session.device), "dtype": str(session.model.dtype).removeprefix("torch."),
        "model": session.source, "fingerprint": model_fingerprint(session.model)}
    return Environment(studio=version(DISTRIBUTION), commit=commit(), python=platform.python_version(),
                       libraries={name: version(name) for name in LIBRARIES}, **model)


def mismatches(recorded: dict, current: Environment) -> list[str]:
    """Where ``current`` differs from a ``recorded`` environment (an :meth:`Environment.to_dict`),
    one readable line each: the studio, its commit (when both are known), Python, each library,
    device, dtype and the model (by fingerprint)."""
    now = current.to_dict()
    pairs = [(name, recorded.get(name), now[name]) for name in ("studio", "python", "device", "dtype")]
    if recorded.get("commit") and current.commit:
        pairs.append(("commit", recorded["commit"], current.commit))
    pairs += [(name, recorded.get("libraries", {}).get(name), now["libraries"].get(name))
              for name in sorted(set(recorded.get("libraries", {})) | set(now["libraries"]))]
    lines = [f"{name} {here} here, {then} in the export" for name, then, here in pairs if then != here]
    if recorded.get("fingerprint") != current.fingerprint:
        lines.append(f"model {current.model} (fingerprint {current.fingerprint}) here, {recorded.get('model')} "
                     f"(fingerprint {recorded.get('fingerprint')}) in the export")
    return lines


def check(recorded: dict, session) -> list[str]:
    """Print a warning naming every difference between this environment and the ``recorded`` one
    of an export (never raising: the re-run goes on and its comparison shows what moved); the
    differences."""
    lines = mismatches(recorded, record(session))
    if lines:
        print("warning: this re-run's environment differs from the export's, so its numbers may differ:\n  "
              + "\n  ".join(lines), file=sys.stderr)
    return lines
