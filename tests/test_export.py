"""Notebook export: the exported notebook re-runs headless (nbclient) and prints the same
numbers as the studio's own runs (probes, a decoding method, steering, clamping); prompts stay
data; the figures come out as standalone HTML; bad targets get one clear message."""
import json

import nbclient
import nbformat
import pytest

import vlm_studio as vs
from studio.cli import main
from studio.sharing.export import CELLS
from studio.world.samples import load_samples

INJECTION = '"""); import os; os.system("id")  #'


def _execute(folder):
    nb = nbformat.read(folder / "notebook.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
    return nb


def _check_reruns_match(folder, n_runs):
    nb = nbformat.read(folder / "notebook.ipynb", as_version=4)
    assert [c.source for c in nb.cells] == [text for _, text in CELLS], "code never depends on the request"
    assert all("os.system" not in c.source for c in nb.cells)
    ran = _execute(folder)
    shown = [o for o in ran.cells[3].outputs if "application/vnd.plotly.v1+json" in o.get("data", {})
             or "text/html" in o.get("data", {})]
    assert shown, "the notebook renders the figures"
    printed = json.loads(ran.cells[-1].outputs[0]["text"])
    assert len(printed["rerun"]) == len(printed["studio"]) == n_runs
    assert printed["differ"] == {}, "same model, same request, same CPU: no field differs"
    for rerun, studio in zip(printed["rerun"], printed["studio"]):
        assert rerun.keys() == studio.keys() and studio
        for name, numbers in studio.items():
            assert rerun[name].get("shape") == numbers.get("shape"), name
            assert rerun[name].get("sum", 0) == pytest.approx(numbers.get("sum", 0), rel=1e-5, abs=1e-6), name


def test_differences_name_changed_values_and_text_that_sums_miss(tmp_path):
    import copy

    import numpy as np
    session = vs.load()
    result = vs.run(session, "logit_lens", str(load_samples()[0].path), "describe the image .", 6)
    assert vs.differences(result, copy.deepcopy(result)) == []
    swapped = copy.deepcopy(result)
    swapped.top_probs = swapped.top_probs[::-1].copy()  # same shape, sum and absolute sum
    assert np.isclose(swapped.top_probs.sum(), result.top_probs.sum())
    assert vs.differences(swapped, result) == ["top_probs"]
    assert vs.digest(swapped)["top_probs"]["sha256"] != vs.digest(result)["top_probs"]["sha256"]
    renamed = copy.deepcopy(result)
    renamed.tokens = ["x"] + renamed.tokens[1:]
    assert vs.differences(renamed, result) == ["tokens"]
    nudged = copy.deepcopy(result)
    nudged.top_probs = nudged.top_probs + 1e-9
    assert vs.differences(nudged, result) == [], "float noise below the tolerance is not a difference"


@pytest.mark.parametrize("probe,prompt", [("logit_lens", "describe the image ."), ("drift", INJECTION)])
def test_exported_probe_notebook_reruns_to_the_same_numbers(tmp_path, probe, prompt):
    out = tmp_path / "export"
    image = str(load_samples()[0].path)
    assert main(["export", probe, image, "--prompt", prompt, "--max-new-tokens", "8", "--out", str(out)]) == 0
    request = json.loads((out / "request.json").read_text())
    assert request["prompt"] == prompt and request["runs"][0]["probe"] == probe and request["model"] is None
    html = (out / "figures.html").read_text()
    assert html.count("Plotly.newPlot") >= 1 and "plotly.js v" in html and " src=" not in html, "standalone"
    _check_reruns_match(out, 1)


def test_mitigation_steering_and_clamp_export_together(tmp_path):
    session = vs.load()
    image = str(load_samples()[1].path)
    runs = [{"probe": "decode", "params": {"method": "vcd", "settings": {"alpha": 1.0, "noise_step": 500}}},
            {"probe": "steer", "params": {"alpha": 4.0, "layers": [1]}},
            {"probe": "clamp", "params": {"feature": 7, "value": 30.0}}]
    out = vs.export(tmp_path / "export", session, image, "describe the image .", runs, max_new_tokens=12)
    request = json.loads((out / "request.json").read_text())
    assert [r["probe"] for r in request["runs"]] == ["decode", "steer", "clamp"]
    assert request["runs"][1]["params"] == {"alpha": 4.0, "layers": [1], "directions": ""}, "defaults are stated"
    steered = vs.load_result(out / request["results"][1])
    assert steered.text != steered.baseline_text, "alpha 4 changes this caption"
    _check_reruns_match(out, 3)


def test_bad_export_targets_get_one_clear_line(tmp_path, capsys):
    image = str(load_samples()[0].path)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    (tmp_path / "afile").write_text("x")
    cases = ((["--out", str(tmp_path / "full")], "not empty"), (["--out", str(tmp_path / "afile" / "sub")], "cannot write"),
             (["--out", str(tmp_path / "x"), "--param", "nope=1"], "no parameter"))
    for extra, needle in cases:
        assert main(["export", "drift", image, "--max-new-tokens", "4", *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    assert not (tmp_path / "x").exists()
