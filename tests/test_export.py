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
WARNING = "warning: this re-run's environment differs from the export's"


def _execute(folder):
    nb = nbformat.read(folder / "notebook.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
    return nb


def _stderr(cell) -> str:
    return "".join(o["text"] for o in cell.outputs if o.get("name") == "stderr")


def _check_reruns_match(folder, n_runs):
    nb = nbformat.read(folder / "notebook.ipynb", as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert code == [text for kind, text in CELLS if kind == "code"], "code never depends on the request"
    assert all("os.system" not in c.source for c in nb.cells)
    ran = _execute(folder)
    assert WARNING not in _stderr(ran.cells[2]), "same environment: no warning"
    shown = [o for o in ran.cells[3].outputs if "application/vnd.plotly.v1+json" in o.get("data", {})
             or "text/html" in o.get("data", {})]
    assert shown, "the notebook renders the figures"
    summary, digests = ran.cells[-1].outputs[0]["text"].splitlines()
    assert summary == f"all {n_runs} re-run(s) match the studio's results"
    printed = json.loads(digests)
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


def test_the_export_records_its_environment_and_a_rerun_elsewhere_warns_but_runs(tmp_path):
    """The notebook re-run under another transformers minor version (faked in the kernel before
    anything imports) prints a warning naming it, and still runs to the same numbers."""
    import transformers

    from studio.concepts.activations import model_fingerprint
    out = tmp_path / "export"
    image = str(load_samples()[0].path)
    assert main(["export", "drift", image, "--max-new-tokens", "4", "--out", str(out)]) == 0
    recorded = json.loads((out / "request.json").read_text())["environment"]
    assert recorded["studio"] == vs.environment().studio and recorded["libraries"]["transformers"] == transformers.__version__
    assert recorded["device"] == "cpu" and recorded["dtype"] == "float32" and recorded["model"] == "embedded"
    assert recorded["fingerprint"] == model_fingerprint(vs.load().model)
    nb = nbformat.read(out / "notebook.ipynb", as_version=4)
    assert f"pip install vlm-studio=={recorded['studio']}" in nb.cells[0].source
    major, minor = transformers.__version__.split(".")[:2]
    fake = f"{major}.{int(minor) + 1}.0"
    nb.cells.insert(1, nbformat.v4.new_code_cell(
        "import importlib.metadata as m\nreal = m.version\n"
        f"m.version = lambda name: {fake!r} if name == 'transformers' else real(name)"))
    nbformat.write(nb, out / "notebook.ipynb")
    ran = _execute(out)
    warned = _stderr(ran.cells[3])
    assert WARNING in warned and f"transformers {fake} here, {transformers.__version__} in the export" in warned
    assert "torch " not in warned and "model " not in warned, "only what differs is named"
    assert ran.cells[-1].outputs[0]["text"].splitlines()[0] == "all 1 re-run(s) match the studio's results"


def test_the_comparison_names_the_runs_and_the_model_that_differ():
    import copy

    from studio.sharing.environment import mismatches
    session = vs.load()
    image = str(load_samples()[0].path)
    runs = [{"probe": "drift", "params": {}}, {"probe": "decode", "params": {}}]
    results = [vs.run(session, run["probe"], image, "describe the image .", 4) for run in runs]
    changed = copy.deepcopy(results)
    changed[1].text = "something else"
    differ = vs.differing_runs(runs, changed, results)
    assert differ == {"01 decode": ["text"]}
    assert vs.comparison(differ, 2) == "1 of 2 re-run(s) differ from the studio's results: 01 decode (text)"
    here = vs.environment(session)
    other = {**here.to_dict(), "model": "/elsewhere/model", "fingerprint": "0123456789abcdef", "device": "cuda:0"}
    assert mismatches(other, here) == [
        "device cpu here, cuda:0 in the export",
        f"model embedded (fingerprint {here.fingerprint}) here, /elsewhere/model (fingerprint 0123456789abcdef) in the export"]
