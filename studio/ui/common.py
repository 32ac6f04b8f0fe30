"""Pieces every tab of the app shares: error display, temporary image files, notebook export."""
from __future__ import annotations

import functools
import inspect
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from gradio.components import Component

from studio.engine.errors import InputError, StudioError


class Serving:
    """The model session the app serves. Opening another model replaces it whole, so every
    handler reads it at call time (:func:`serving`) and a failed load leaves the old one serving.

    ``options`` are the loading options the app was launched with (device, dtype), reused when
    another model is opened; ``resets`` map components to their value for a new session (each
    tab registers what must not survive a change of model).
    """

    def __init__(self, session, **options) -> None:
        self.session = session
        self.options = options
        self.resets: dict[Component, Callable] = {}

    def clear(self, *components: Component) -> None:
        """Empty these components when another model is opened."""
        self.resets |= {component: _nothing for component in components}


def _nothing(session) -> None:
    return None


def serving(current: Serving, handler: Callable, *bound) -> Callable:
    """``handler(session, *bound, *args)`` as a Gradio handler of ``*args``, with the session that
    is current when the event fires. The signature Gradio reads is the handler's without its
    leading (session, *bound) parameters, so gr.Progress and event-data parameters still work."""
    skip = 1 + len(bound)
    if inspect.isgeneratorfunction(handler):
        def steps(*args, **kwargs):
            yield from handler(current.session, *bound, *args, **kwargs)
        wrapper: Callable = steps
    else:
        def call(*args, **kwargs):
            return handler(current.session, *bound, *args, **kwargs)
        wrapper = call
    functools.update_wrapper(wrapper, handler)
    del wrapper.__wrapped__  # type: ignore[attr-defined]
    signature = inspect.signature(handler)
    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=list(signature.parameters.values())[skip:])
    return wrapper


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


def keyed(handler: Callable, outputs: Mapping[str, Component]) -> Callable:
    """``handler`` returning (or yielding) ``{name: value}`` for some of ``outputs``, as Gradio
    wants it: ``{component: value}``. Handlers name what they update, so adding a panel cannot
    shift another; a name not in ``outputs`` is an error and a name left out is not updated. A
    generator handler yields between steps (an empty dict changes nothing): Gradio cancels a generator between yields, so a
    running step always finishes and the model and its hooks are never left half-way."""
    def convert(values: dict) -> dict:
        unknown = sorted(set(values) - set(outputs))
        if unknown:
            raise KeyError(f"{getattr(handler, '__name__', handler)} returned unknown outputs {unknown}")
        return {component: values[name] if name in values else gr.skip() for name, component in outputs.items()}

    if inspect.isgeneratorfunction(handler):
        @functools.wraps(handler)
        def steps(*args, **kwargs):
            for values in handler(*args, **kwargs):
                yield convert(values)
        return steps

    @functools.wraps(handler)
    def wrapped(*args, **kwargs):
        return convert(handler(*args, **kwargs))
    return wrapped


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


def export_controls(current: Serving, tab: str, spec: gr.State) -> None:
    """An export button and its download file, wired to :func:`export_download` (api ``export_<tab>``);
    ``spec`` holds an :class:`ExportSpec` or an object with a ``spec`` attribute (reset with the model)."""
    with gr.Row():
        button = gr.Button(f"Export this {tab} run as a notebook", size="sm", elem_id=f"export-{tab}")
        file = gr.File(label="notebook bundle (.zip)", height=70, elem_id=f"export-{tab}-file")
    button.click(serving(current, export_download, tab), spec, file, api_name=f"export_{tab}")
    current.clear(spec, file)
