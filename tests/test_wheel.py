"""The studio as users install it: `python -m build` makes an sdist and a wheel (offline, from a
copy of the checkout, which stays clean) that pass `twine check --strict`, carrying the packages
with their assets and nothing test-only; the wheel, installed into a bare virtual environment
(neither the checkout nor the editable install importable), runs `vlm-studio describe` and a
probe from another folder and answers exactly what the checkout answers."""
import json
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from studio.cli import main
from studio.sharing.environment import checkout
from studio.sharing.wheel import copy_source
from studio.world.samples import load_samples

PROMPT = "describe the image ."
SHIPPED = ("studio/assets/world-model/model.safetensors", "studio/assets/world-model/config.json",
           "studio/assets/samples/ground_truth.json", "studio/assets/concepts/sae_weights.safetensors",
           "studio/assets/steering/preference.safetensors", "studio/assets/MODEL_CARD.md", "probes/data/coco_objects.json",
           "studio/py.typed", "vlm_studio/__init__.py")


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    root = checkout()
    assert root is not None, "the tests run from the checkout"
    work = tmp_path_factory.mktemp("build")
    source = copy_source(root, work / "source")
    done = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(work / "dist"), str(source)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return work / "dist"


def test_sdist_and_wheel_pass_twine_and_hold_the_assets(dist):
    wheel, sdist = next(dist.glob("*.whl")), next(dist.glob("*.tar.gz"))
    checked = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    in_wheel = zipfile.ZipFile(wheel).namelist()
    assert set(SHIPPED) <= set(in_wheel)
    assert not [n for n in in_wheel if n.startswith(("tests/", "tiny_models/", "bench/")) or "__pycache__" in n]
    top = sdist.name.removesuffix(".tar.gz")
    in_sdist = tarfile.open(sdist).getnames()
    assert {f"{top}/{name}" for name in SHIPPED} <= set(in_sdist)
    assert not [n for n in in_sdist if n.startswith((f"{top}/tests", f"{top}/tiny_models"))]


def test_the_installed_wheel_answers_from_another_folder(dist, bare_venv, tmp_path, capsys):
    python, env = bare_venv
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    "--no-index", str(next(dist.glob("*.whl")))], check=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy2(load_samples()[0].path, elsewhere / "scene.png")

    def run(*args: str) -> str:
        done = subprocess.run([*args], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    found = json.loads(run(str(python), "-c", "import json, studio, studio.engine.assets as a, studio.sharing.environment as e; "
                           "print(json.dumps([studio.__file__, str(a.ASSETS), e.checkout() is None, e.commit()]))"))
    installed = python.parent.parent
    assert all(Path(path).resolve().is_relative_to(installed.resolve()) for path in found[:2]), found
    assert found[2:] == [True, None], "an installed studio has no checkout and no commit"
    cli = str(python.parent / "vlm-studio")
    answer = run(cli, "describe", "scene.png", "--prompt", PROMPT)
    run(cli, "probe", "steer", "scene.png", "--prompt", PROMPT, "--param", "alpha=1", "--json", "steer.json")
    image = str(elsewhere / "scene.png")
    assert main(["describe", image, "--prompt", PROMPT]) == 0
    assert answer == capsys.readouterr().out and answer.strip()
    assert main(["probe", "steer", image, "--prompt", PROMPT, "--param", "alpha=1", "--json", str(tmp_path / "here.json")]) == 0
    assert json.loads((elsewhere / "steer.json").read_text()) == json.loads((tmp_path / "here.json").read_text())
