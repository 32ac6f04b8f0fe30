"""Export probe runs as a folder holding a notebook that re-runs them.

The folder holds ``request.json`` (the model, the prompt, the image file name and each run's
probe and parameters: data, never code), the image as ``image.png``, the studio's own
results (``results/NN-probe.json`` + ``.npz``), ``figures.html`` (every default figure,
standalone, plotly.js inlined once) and ``notebook.ipynb``. ``request.json`` also holds the
environment the results were computed in (:mod:`studio.sharing.environment`). The notebook's
first cell names the studio version that exported it and how to install it; its code is fixed
text that imports :mod:`vlm_studio` and reads ``request.json``, so a prompt that looks like
code (quotes, brackets, ``import os``) stays inert data. It loads the same model, warns
(without stopping) where its environment differs from the recorded one, re-runs each request,
renders the same figures, names the runs whose results differ from the studio's and prints a
digest of both. :func:`bundle` zips the folder for a download from the app.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from studio.engine.errors import InputError
from studio.engine.files import atomic_write, atomic_write_json, building_dir
from studio.engine.images import load_image
from studio.sharing.environment import Environment, record

INTRO = """# vlm-studio run

Exported by vlm-studio {version}{origin}. Re-run it with that version of the studio installed:

```
pip install {requirement}
```

It re-runs the requests in `request.json` (written by the studio's export) with the public API
`vlm_studio`, shows their figures, and compares the numbers with the studio's results saved beside it
in `results/`. `request.json` also records the environment they were computed in (Python, torch,
transformers and the other key libraries, device, dtype, the model's source and fingerprint): after
loading the model, the notebook warns, without stopping, about every way this environment differs."""

CELLS = [
    ("markdown", INTRO),
    ("code", "import json\n\nimport vlm_studio as vs\n\nwith open('request.json') as f:\n    request = json.load(f)\n"
             "request"),
    ("code", "session = vs.load(request['model'])\nvs.check_environment(request['environment'], session)\n"
             "results = [vs.run(session, run['probe'], request['image'], request['prompt'], request['max_new_tokens'], "
             "**run['params'])\n           for run in request['runs']]"),
    ("code", "image = vs.image_array(request['image'])\nfor result in results:\n"
             "    for figure in vs.figures(result, image).values():\n        figure.show()"),
    ("code", "studio = [vs.load_result(stem) for stem in request['results']]\n"
             "differ = vs.differing_runs(request['runs'], results, studio)\n"
             "print(vs.comparison(differ, len(results)))\n"
             "print(json.dumps({'rerun': [vs.digest(r) for r in results], 'studio': [vs.digest(r) for r in studio],\n"
             "                  'differ': differ}))"),
]


def digest(result) -> dict:
    """What to compare runs by: per numeric array its shape, sum, absolute sum and a hash of its
    exact values; per other field (text, ids, settings) a hash of its JSON form."""
    out = {}
    for name, value in sorted(vars(result).items()):
        if isinstance(value, np.ndarray) and value.dtype.kind in "fiub":
            as_float = value.astype(float)
            out[name] = {"shape": list(value.shape), "sum": float(np.nansum(as_float)),
                         "abs": float(np.nansum(np.abs(as_float))),
                         "sha256": hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()[:16]}
        else:
            text = json.dumps(_plain(value), sort_keys=True, default=str)
            out[name] = {"sha256": hashlib.sha256(text.encode()).hexdigest()[:16]}
    return out


def differences(new, old, rtol: float = 1e-5, atol: float = 1e-6) -> list[str]:
    """The fields where two results differ: arrays by shape and by values within ``rtol`` /
    ``atol`` (NaN equal to NaN), every other field (text, ids, settings) exactly."""
    if type(new) is not type(old):
        return [f"kind ({type(new).__name__} vs {type(old).__name__})"]
    out = []
    for name, value in vars(new).items():
        other = getattr(old, name)
        if isinstance(value, np.ndarray):
            same = isinstance(other, np.ndarray) and value.shape == other.shape and (
                np.array_equal(value, other) if value.dtype.kind not in "fc"
                else np.allclose(value, other, rtol=rtol, atol=atol, equal_nan=True))
        else:
            same = _plain(value) == _plain(other)
        if not same:
            out.append(name)
    return out


def differing_runs(runs: list[dict], new: list, old: list) -> dict[str, list[str]]:
    """For each run whose re-run differs from the studio's result, named ``"NN probe"`` as in
    ``results/``, the fields that differ (see :func:`differences`); runs that match are left out."""
    named = {f"{i:02d} {run['probe']}": differences(a, b) for i, (run, a, b) in enumerate(zip(runs, new, old))}
    return {name: fields for name, fields in named.items() if fields}


def comparison(differ: dict[str, list[str]], n_runs: int) -> str:
    """One line saying whether the re-runs match the studio's results, naming each run that does not."""
    if not differ:
        return f"all {n_runs} re-run(s) match the studio's results"
    listed = "; ".join(f"{name} ({', '.join(fields)})" for name, fields in differ.items())
    return f"{len(differ)} of {n_runs} re-run(s) differ from the studio's results: {listed}"


def intro(environment: Environment) -> str:
    """The notebook's first cell: the studio version (and commit) that exported it and how to install it."""
    origin = "" if not environment.commit else (
        f", from a source checkout at commit `{environment.commit}` (for exactly that code, `pip install .` "
        "in a checkout of that commit)")
    requirement = f"vlm-studio=={environment.studio}" if environment.studio else "vlm-studio"
    return INTRO.format(version=environment.studio or "(not installed: version unknown)", origin=origin,
                        requirement=requirement)


def notebook(environment: Environment):
    """The notebook (an ``nbformat`` node): fixed code that reads ``request.json``, after a first
    cell naming the studio version that exported it (``environment``) and how to install it."""
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(intro(environment)) if kind == "markdown"
                else nbformat.v4.new_code_cell(text) for kind, text in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def model_reference(session) -> str | None:
    """What reloads the session's model: None for the embedded one, an absolute folder, or a Hub id."""
    if session.source == "embedded":
        return None
    path = Path(session.source).expanduser()
    return str(path.resolve()) if path.is_dir() else session.source


def figures_html(named: list[tuple[str, Any]]) -> str:
    """One standalone page of figures (title, plotly figure), plotly.js inlined once."""
    parts = [f"<h2>{title}</h2>" + figure.to_html(full_html=False, include_plotlyjs=(i == 0))
             for i, (title, figure) in enumerate(named)]
    return ("<!doctype html><html><head><meta charset='utf-8'><title>vlm-studio figures</title></head><body>"
            + "".join(parts) + "</body></html>")


def run_all(session, image, prompt: str, runs: list[dict], max_new_tokens: int) -> list:
    """Each run's result (validated before any of them starts)."""
    from probes import ProbeRequest, get_probe
    if not runs:
        raise InputError("there is nothing to export: no run was given")
    probes = [get_probe(r["probe"]) for r in runs]
    checked = [probe.params(**r.get("params", {})) for probe, r in zip(probes, runs)]
    request = ProbeRequest(image, prompt, int(max_new_tokens))
    return [probe.run(session, request, params) for probe, params in zip(probes, checked)]


def export_runs(out_dir: str | Path, session, image, prompt: str, runs: list[dict], max_new_tokens: int = 48,
                force: bool = False, results: list | None = None) -> Path:
    """Write the export folder for ``runs`` (``[{"probe", "params"}]``), running them unless their
    ``results`` are given; refused if ``out_dir`` is not empty unless ``force``."""
    import nbformat

    from views.registry import figures
    results = results if results is not None else run_all(session, image, prompt, runs, max_new_tokens)
    picture = load_image(image) if image is not None else None
    array = None if picture is None else np.asarray(picture)
    out = Path(out_dir)
    with building_dir(out, force) as staging:
        if picture is not None:
            picture.save(staging / "image.png")
        (staging / "results").mkdir()
        stems, named = [], []
        for i, (run, result) in enumerate(zip(runs, results)):
            stem = f"results/{i:02d}-{run['probe']}"
            result.save(staging / stem)
            stems.append(stem)
            named += [(f"{i:02d} {run['probe']}: {name}", fig) for name, fig in figures(result, array).items()]
        environment = record(session)
        atomic_write_json(staging / "request.json", {
            "model": model_reference(session), "image": "image.png" if picture is not None else None,
            "prompt": prompt, "max_new_tokens": int(max_new_tokens),
            "runs": [{"probe": r["probe"], "params": _plain(get_params(r))} for r in runs], "results": stems,
            "environment": environment.to_dict()})
        atomic_write(staging / "figures.html", figures_html(named).encode())
        atomic_write(staging / "notebook.ipynb", nbformat.writes(notebook(environment)).encode())
    return out


def get_params(run: dict) -> dict:
    """A run's parameters with the probe's defaults filled in (the notebook states every value)."""
    from probes import get_probe
    probe = get_probe(run["probe"])
    return probe.params(**run.get("params", {})).to_dict()


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def bundle(session, image, prompt: str, runs: list[dict], max_new_tokens: int, name: str,
           results: list | None = None) -> str:
    """Export into a fresh temporary folder and zip it; the zip's path (for a download button)."""
    root = Path(tempfile.mkdtemp(prefix="vlm-studio-export-"))
    folder = export_runs(root / name, session, image, prompt, runs, max_new_tokens, results=results)
    archive = shutil.make_archive(str(root / name), "zip", root_dir=root, base_dir=folder.name)
    shutil.rmtree(folder)
    return archive
