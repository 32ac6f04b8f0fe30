"""Write a ready-to-push Hugging Face Space that runs the studio on its embedded model.

The folder holds a copy of the studio's packages and the assets the app reads (the world
model, samples, concept dictionary, preference fit), so the Space runs exactly this version
of the studio: ``requirements.txt`` pins the libraries at the versions installed here, and
``README.md`` carries the Spaces front matter and the studio's version and commit. On
ZeroGPU hardware (the ``spaces`` package present) the model calls are marked as GPU work;
without it nothing changes and the app runs on CPU.
"""
from __future__ import annotations

import shutil
import subprocess
from importlib import metadata
from pathlib import Path

from studio.engine.files import building_dir

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("studio", "probes", "views", "vlm_studio")
ASSETS = ("world-model", "samples", "concepts", "steering", "MODEL_CARD.md")
REQUIREMENTS = ("torch", "transformers", "tokenizers", "safetensors", "gradio", "plotly", "pillow", "numpy",
                "tqdm", "captum", "sae-lens", "umap-learn", "scikit-learn", "scipy", "nbformat")

APP = '''"""vlm-studio on Hugging Face Spaces: the studio on its embedded world model."""
from studio.ui.app import build_app
from studio.engine.session import ModelSession

try:
    import spaces  # ZeroGPU hardware lends a GPU to functions marked with spaces.GPU
except ImportError:
    spaces = None

session = ModelSession.load("embedded", device="cuda" if spaces is not None else "auto")
if spaces is not None:
    for name in ("generate", "forward", "answer_batch"):
        setattr(session, name, spaces.GPU(getattr(session, name)))

demo = build_app(session)

if __name__ == "__main__":
    demo.queue().launch()
'''

FRONT_MATTER = """---
title: vlm-studio
emoji: 🔬
colorFrom: indigo
colorTo: pink
sdk: gradio
sdk_version: {gradio}
app_file: app.py
pinned: false
short_description: Interpretability and hallucination studio for VLMs
---

# vlm-studio

An interactive studio for interpretability and hallucination analysis of vision-language
models, running its own small world model (see `assets/MODEL_CARD.md`). Studio version
{version}, commit `{commit}`.
"""


def _commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def requirements() -> str:
    """The studio's libraries pinned at the installed versions (local labels such as +cpu dropped)."""
    return "".join(f"{name}=={metadata.version(name).split('+')[0]}\n" for name in REQUIREMENTS)


def write_space(out_dir: str | Path, force: bool = False) -> Path:
    """Write the Space into ``out_dir`` (refused if it exists and is not empty, unless ``force``)."""
    out = Path(out_dir)
    with building_dir(out, force) as staging:
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for package in PACKAGES:
            shutil.copytree(ROOT / package, staging / package, ignore=ignore)
        for asset in ASSETS:
            source, target = ROOT / "assets" / asset, staging / "assets" / asset
            if source.is_dir():
                shutil.copytree(source, target, ignore=ignore)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
        (staging / "app.py").write_text(APP)
        (staging / "requirements.txt").write_text(requirements())
        (staging / "README.md").write_text(FRONT_MATTER.format(
            gradio=metadata.version("gradio"), version=metadata.version("vlm-studio"), commit=_commit()))
    return out
