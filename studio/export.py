"""Export a probe run as a folder holding a notebook that re-runs it.

The folder holds ``request.json`` (the model, probe, prompt, parameters and image file name:
data, never code), the image as ``image.png``, the studio's own result (``result.json`` +
``result.npz``) and ``notebook.ipynb``. The notebook's code is fixed text that reads
``request.json``, so a prompt that looks like code (quotes, brackets, ``import os``) stays
inert data. It loads the
same model, re-runs the probe with the same parameters, saves its own result beside the
studio's and prints a digest of both to compare.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from studio.files import atomic_write, atomic_write_json, building_dir
from studio.images import load_image

CELLS = [
    ("markdown", "# vlm-studio probe run\n\nRe-runs the request in `request.json` (written by "
                 "`vlm-studio export`) and compares it with the studio's result saved beside it."),
    ("code", "import json\n\nfrom probes import ProbeRequest, ProbeResult, run_probe\n"
             "from studio.export import digest\nfrom studio.session import ModelSession\n\n"
             "with open('request.json') as f:\n    request = json.load(f)\nrequest"),
    ("code", "session = ModelSession.load(request['model'])\n"
             "result = run_probe(session, request['probe'], ProbeRequest(request['image'], request['prompt'],"
             " request['max_new_tokens']), **request['params'])\nresult.save('rerun')"),
    ("code", "print(json.dumps({'rerun': digest(result), 'studio': digest(ProbeResult.load('result'))}))"),
]


def digest(result) -> dict:
    """Per array of a probe result: its shape, sum and absolute sum (numbers to compare runs by)."""
    arrays = {k: v for k, v in vars(result).items() if isinstance(v, np.ndarray) and v.dtype.kind in "fiub"}
    return {k: {"shape": list(v.shape), "sum": float(np.nansum(v.astype(float))),
                "abs": float(np.nansum(np.abs(v.astype(float))))} for k, v in sorted(arrays.items())}


def notebook():
    """The notebook (an ``nbformat`` node): fixed code that reads ``request.json``."""
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(text) if kind == "markdown" else nbformat.v4.new_code_cell(text)
                for kind, text in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def export_probe(out_dir: str | Path, result, model: str, probe: str, image, prompt: str, max_new_tokens: int,
                 params: dict, force: bool = False) -> Path:
    """Write the export folder for a finished probe ``result`` (refused if ``out_dir`` is not empty)."""
    import nbformat
    out = Path(out_dir)
    with building_dir(out, force) as staging:
        load_image(image).save(staging / "image.png")
        request = {"model": model, "probe": probe, "prompt": prompt, "max_new_tokens": max_new_tokens,
                   "params": params, "image": "image.png"}
        atomic_write_json(staging / "request.json", request)
        result.save(staging / "result")
        atomic_write(staging / "notebook.ipynb", nbformat.writes(notebook()).encode())
    return out
