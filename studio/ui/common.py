"""Pieces every tab of the app shares: error display, temporary image files, notebook export."""
from __future__ import annotations

import functools
import inspect
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from studio.engine.errors import InputError, StudioError


def user_errors(handler):
    """Show StudioErrors as a gr.Error message instead of a crash (generator handlers too)."""
    if inspect.isgeneratorfunction(handler):
        @functools.wraps(handler)
        def steps(*args, **kwargs):
            try:
                yield from handler(*args, **kwargs)
            except StudioError as err:
                raise gr.Error(str(err), print_exception=False) from None
        return steps

    @functools.wraps(handler)
    def wrapped(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except StudioError as err:
            raise gr.Error(str(err), print_exception=False) from None
    return wrapped


def skip_all(n: int) -> tuple:
    """A yield that changes none of ``n`` outputs: a point where a cancelled event stops.

    Gradio cancels a generator handler between yields (a running step always finishes, so the
    model and its hooks are never left half-way)."""
    return tuple(gr.skip() for _ in range(n))


def save_png(image) -> str:
    """Write ``image`` to a temporary PNG (what Gradio serves) and return its path."""
    handle = tempfile.NamedTemporaryFile(prefix="vlm-studio-", suffix=".png", delete=False)
    image.save(handle, format="PNG")
    handle.close()
    return handle.name


@dataclass
class ExportSpec:
    """What a tab last ran, enough to export it: the request and the runs (``{"probe", "params"}``),
    with their results when the tab kept them (else the export re-runs them)."""

    image: str | None
    prompt: str
    max_new_tokens: int
    runs: list[dict]
    results: list | None = None


@user_errors
def export_download(session, tab: str, spec: ExportSpec | None) -> str:
    """A zip of the tab's last run as a re-runnable notebook, its results and HTML figures."""
    from studio.sharing.export import bundle
    spec = getattr(spec, "spec", spec)
    if spec is None:
        raise InputError(f"there is no {tab} run to export yet: run the tab first")
    if spec.image is not None and not Path(spec.image).is_file():
        raise InputError(f"the image of this {tab} run no longer exists on the server; run the tab again")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return bundle(session, spec.image, spec.prompt, spec.runs, spec.max_new_tokens, f"vlm-studio-{tab}-{stamp}",
                  results=spec.results)


def export_controls(session, tab: str, spec: gr.State) -> None:
    """An export button and its download file, wired to :func:`export_download` (api ``export_<tab>``);
    ``spec`` holds an :class:`ExportSpec` or an object with a ``spec`` attribute."""
    with gr.Row():
        button = gr.Button(f"Export this {tab} run as a notebook", size="sm", elem_id=f"export-{tab}")
        file = gr.File(label="notebook bundle (.zip)", height=70, elem_id=f"export-{tab}-file")
    button.click(functools.partial(export_download, session, tab), spec, file, api_name=f"export_{tab}")
