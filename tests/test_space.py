"""`vlm-studio space`: the written folder holds the studio as a wheel (no source tree) and runs as
a Space: launched in a subprocess in a bare virtual environment, its app.py installs the wheel
and answers a gradio_client request; a non-empty target is refused."""
import json
import socket
import subprocess
import time
from importlib import metadata
from pathlib import Path

from gradio_client import Client, handle_file

from studio.cli import main
from studio.world.samples import load_samples


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_space_folder_runs_and_answers(tmp_path, capsys, bare_venv):
    space = tmp_path / "space"
    assert main(["space", str(space)]) == 0
    front = (space / "README.md").read_text().split("---")[1]
    assert "sdk: gradio" in front and "app_file: app.py" in front and "sdk_version: 6." in front
    pins = (space / "requirements.txt").read_text().split()
    assert all("==" in p and "+" not in p for p in pins) and {"gradio", "torch", "transformers", "nbformat"} <= {
        p.split("==")[0] for p in pins}
    wheel = next(space.glob("vlm_studio-*.whl"))
    assert sorted(p.name for p in space.iterdir()) == sorted(
        ["MODEL_CARD.md", "README.md", "app.py", "environment.json", "requirements.txt", wheel.name])
    assert json.loads((space / "environment.json").read_text())["studio"] == metadata.version("vlm-studio")
    python, env = bare_venv
    port = _port()
    env = {**env, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([str(python), "app.py"], cwd=space, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(240):
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        sample = load_samples()[0]
        highlighted, table, status = client.predict(handle_file(str(sample.path)), "describe the image .", 30,
                                                    api_name="/generate")
        assert highlighted and "tokens" in status
    finally:
        process.terminate()
        process.wait(timeout=30)
    where = subprocess.run([str(python), "-c", "import studio; print(studio.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert Path(where.strip()).is_relative_to(python.parent.parent), "the Space's studio is its installed wheel"


def test_a_non_empty_folder_is_refused_unless_forced(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["space", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err and (tmp_path / "keep.txt").read_text() == "mine"
    assert main(["space", str(tmp_path), "--force"]) == 0
    assert (tmp_path / "app.py").is_file() and not (tmp_path / "keep.txt").exists()
