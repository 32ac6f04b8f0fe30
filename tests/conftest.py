"""Shared fixtures. Tests never touch the network: the Hub is forced offline here."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def embedded():
    """The shipped world model, loaded once."""
    from studio.engine.session import ModelSession
    return ModelSession.load(None, device="cpu")


@pytest.fixture(scope="session")
def untrained_world():
    """A freshly initialised (untrained) world model: same architecture and processor, fast to build
    (with the phase 1-3 vocabulary, as the world model has before its conflict phase)."""
    from tiny_models import untrained_world as build
    return build(layers=2, seed=3)


@pytest.fixture(scope="module")
def launch():
    """Launch a Blocks app on a free local port and return its URL; closed after the module."""
    import socket
    apps = []

    def start(app, concurrency: int = 1) -> str:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        app.queue(default_concurrency_limit=concurrency).launch(
            server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        apps.append(app)
        return f"http://127.0.0.1:{port}/"

    yield start
    for app in apps:
        app.close()


@pytest.fixture(scope="module")
def serve(launch):
    """Launch a Blocks app (see ``launch``) and return a gradio_client for it."""
    from gradio_client import Client
    return lambda app, concurrency=1: Client(launch(app, concurrency), verbose=False)


@pytest.fixture()
def bare_venv(tmp_path):
    """A new virtual environment without the studio, and the environment variables to run it with.

    Its dependencies come from this environment's site-packages, listed as a plain path in a
    ``.pth`` file: Python adds that folder to ``sys.path`` but runs none of the ``.pth`` files in
    it (the editable install's finder among them), so only what is installed into the new
    environment can provide ``studio``. Returns ``(python, env)``."""
    import subprocess
    import sys
    import sysconfig
    from pathlib import Path

    root = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (Path(purelib) / "studio-test-dependencies.pth").write_text("".join(f"{p}\n" for p in ours))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return python, env
