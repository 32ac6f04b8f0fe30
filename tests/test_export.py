"""Notebook export: the exported notebook re-runs headless (nbclient) and prints the same
numbers as the studio's own run; prompts stay data; bad targets get one clear message."""
import json

import nbclient
import nbformat
import pytest

from studio.cli import main
from studio.export import CELLS
from studio.samples import load_samples

INJECTION = '"""); import os; os.system("id")  #'


def _execute(folder):
    nb = nbformat.read(folder / "notebook.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
    return nb


@pytest.mark.parametrize("probe,prompt", [("logit_lens", "describe the image ."), ("drift", INJECTION)])
def test_exported_notebook_reruns_to_the_same_numbers(tmp_path, probe, prompt, capsys):
    out = tmp_path / "export"
    image = str(load_samples()[0].path)
    assert main(["export", probe, image, "--prompt", prompt, "--max-new-tokens", "8", "--out", str(out)]) == 0
    request = json.loads((out / "request.json").read_text())
    assert request["prompt"] == prompt and request["probe"] == probe
    nb = nbformat.read(out / "notebook.ipynb", as_version=4)
    assert [c.source for c in nb.cells] == [text for _, text in CELLS], "code never depends on the request"
    assert all("os.system" not in c.source for c in nb.cells)
    ran = _execute(out)
    printed = json.loads(ran.cells[-1].outputs[0]["text"])
    assert printed["rerun"].keys() == printed["studio"].keys() and printed["studio"]
    for name, studio in printed["studio"].items():  # the same model and request on the same CPU
        rerun = printed["rerun"][name]
        assert rerun["shape"] == studio["shape"]
        assert rerun["abs"] == pytest.approx(studio["abs"], rel=1e-5, abs=1e-6), name


def test_bad_export_targets_get_one_clear_line(tmp_path, capsys):
    image = str(load_samples()[0].path)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    (tmp_path / "afile").write_text("x")
    for out, needle in ((tmp_path / "full", "not empty"), (tmp_path / "afile" / "sub", "cannot write")):
        assert main(["export", "drift", image, "--max-new-tokens", "4", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
