"""Write a ready-to-push Hugging Face Space that runs the studio on its embedded model.

The folder holds the studio as a wheel (its packages and the assets the app reads: the world
model, samples, concept dictionary, preference fit), which ``app.py`` installs on start, so the
Space runs exactly this version of the studio and needs no source tree beside it.
``requirements.txt`` pins the studio's dependencies at the versions installed here (the Space
installs them before ``app.py`` runs), ``environment.json`` records the environment the Space
was written from, and ``README.md`` carries the Spaces front matter and the studio's version
and commit. On ZeroGPU hardware every model call runs inside a ``spaces.GPU`` function
(:mod:`studio.engine.zerogpu`); without it nothing changes and the app runs on CPU.
"""
from __future__ import annotations

import re
import shutil
from importlib import metadata
from pathlib import Path

from studio.engine.assets import asset
from studio.engine.errors import InputError
from studio.engine.files import atomic_write_json, building_dir
from studio.sharing.environment import DISTRIBUTION, commit, record
from studio.sharing.wheel import build_wheel

APP = '''"""vlm-studio on Hugging Face Spaces: the studio on its embedded world model.

The studio is the wheel beside this file, installed here on start (without dependencies: the
Space installs requirements.txt, which pins them, before this runs).
"""
import importlib
import importlib.util
import subprocess
import sys
from importlib import metadata
from pathlib import Path

try:
    import spaces  # on ZeroGPU hardware, lends a GPU to functions marked with spaces.GPU
except ImportError:
    spaces = None

WHEEL = Path(__file__).with_name("{wheel}")
if importlib.util.find_spec("studio") is None or metadata.version("vlm-studio") != "{version}":
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(WHEEL)],
                   check=True)
    importlib.invalidate_caches()

from studio.engine import zerogpu  # noqa: E402
from studio.engine.session import ModelSession  # noqa: E402
from studio.ui.app import build_app  # noqa: E402

if zerogpu.active():
    # spaces.GPU pickles its arguments into a GPU worker unless it runs inside one: with every
    # event wrapped, each event runs in the worker and the model calls' spaces.GPU run in place.
    spaces.enable_gradio_auto_wrap()
session = ModelSession.load("embedded", device="cuda" if zerogpu.active() else "auto")
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
models, running its own small world model (see `MODEL_CARD.md`). Studio version {version},
commit `{commit}`.

The studio is `{wheel}` (its packages with the embedded model, samples, concept dictionary and
steering fit), which `app.py` installs on start; `requirements.txt` pins its dependencies and
`environment.json` records the environment this Space was written from. Every run exported from
the app records the environment it ran in.
"""


def requirements() -> str:
    """The studio's dependencies (its distribution's requirements, extras left out) pinned at the
    installed versions, local labels such as +cpu dropped."""
    names = [re.split(r"[\s<>=!~;\[(]", req, maxsplit=1)[0] for req in metadata.requires(DISTRIBUTION) or []
             if "extra ==" not in req]
    return "".join(f"{name}=={metadata.version(name).split('+')[0]}\n" for name in names)


def write_space(out_dir: str | Path, force: bool = False, wheel: str | Path | None = None) -> Path:
    """Write the Space into ``out_dir`` (refused if it exists and is not empty, unless ``force``),
    with the studio's ``wheel`` (default: built from the checkout the studio runs from)."""
    if wheel is not None and not (Path(wheel).is_file() and re.fullmatch(r"vlm_studio-[^-]+-.+\.whl", Path(wheel).name)):
        raise InputError(f"{wheel} is not a vlm-studio wheel file (vlm_studio-VERSION-...whl)")
    out = Path(out_dir)
    with building_dir(out, force) as staging:
        built = Path(shutil.copy2(wheel, staging) if wheel else build_wheel(staging))
        version = built.name.split("-")[1]
        (staging / "app.py").write_text(APP.format(wheel=built.name, version=version))
        shutil.copy2(asset("MODEL_CARD.md"), staging / "MODEL_CARD.md")
        (staging / "requirements.txt").write_text(requirements())
        atomic_write_json(staging / "environment.json", record().to_dict())
        (staging / "README.md").write_text(FRONT_MATTER.format(
            gradio=metadata.version("gradio"), version=version, commit=(None if wheel else commit()) or "unknown",
            wheel=built.name))
    return out
