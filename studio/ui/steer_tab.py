"""The "Steer" tab: the modality-preference probe curve, the alpha sweep, and a live alpha that
regenerates the current answer with the steering vector added (a request-scoped intervention)."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import cast

import gradio as gr

from probes import ProbeRequest, run_probe
from probes.answers import AnswerResult, fit_reference, fitted
from studio.engine.assets import asset
from studio.engine.errors import InputError, StudioError
from studio.engine.session import ModelSession
from studio.steering.fit import DirectionFit
from studio.steering.vectors import MAX_ALPHA
from studio.ui.common import ExportSpec, Serving, export_controls, keyed, serving, user_errors
from views.steering import alpha_curve, probe_curve

DEFAULT_STEERING = asset("steering")


def load_fit(session: ModelSession, folder: str | Path | None) -> tuple[DirectionFit | None, str]:
    """The saved preference fit for this session, or None and the reason (shown in the tab)."""
    try:
        return fitted(session, "steer", Path(folder) if folder else DEFAULT_STEERING, DirectionFit.load), ""
    except StudioError as err:
        return None, (f"No modality-preference direction for this model ({err}). Fit one with "
                      f"`vlm-studio steer fit --out DIR` and launch with `--steering DIR`.")


def parse_layers(text: str, n_layers: int) -> list[int]:
    try:
        layers = sorted({int(x) for x in str(text).replace(" ", "").split(",") if x})
    except ValueError:
        raise InputError(f"layers must be comma-separated integers, e.g. 1,2; got {text!r}") from None
    bad = [x for x in layers if not 0 <= x < n_layers]
    if bad or not layers:
        raise InputError(f"layers must be within 0..{n_layers - 1}; got {text!r}")
    return layers


def slider_range(fit: DirectionFit) -> tuple[float, float]:
    """(largest |α| offered, starting α): twice the sweep's reach (within the allowed maximum),
    starting at the α the fit chose for the bias split, else at 1."""
    alphas = fit.extra.get("sweep", {}).get("alphas", [MAX_ALPHA / 2])
    reach = min(MAX_ALPHA, 2 * max(abs(a) for a in alphas))
    return reach, float(fit.extra.get("bias_split", {}).get("alpha", 1.0))


@user_errors
def steer(session: ModelSession, folder: str | None, image_path: str | None, prompt: str,
          max_new_tokens: float, alpha: float, layers: str) -> dict:
    """The answer unsteered and steered by ``alpha`` at ``layers``, the sweep with alpha marked,
    and what to export (a ``steer`` run)."""
    fit, problem = load_fit(session, folder)
    if fit is None:
        raise InputError(problem)
    params = {"alpha": float(alpha), "layers": parse_layers(layers, session.n_layers),
              "directions": fit_reference(folder or DEFAULT_STEERING, "steering")}
    request = ProbeRequest(image_path, prompt, int(max_new_tokens))
    result = cast(AnswerResult, run_probe(session, "steer", request, **params))
    curve = alpha_curve(fit.extra["sweep"], float(alpha)) if "sweep" in fit.extra else None
    spec = ExportSpec(image_path, prompt, int(max_new_tokens), [{"probe": "steer", "params": params}], [result])
    return {"plain": result.baseline_text, "steered": result.text, "curve": curve, "spec": spec}


def overview(session: ModelSession, folder: str | None) -> dict:
    """The tab's header, curves, α slider and default layers for this session's fit (or why none)."""
    fit, problem = load_fit(session, folder)
    if fit is None:
        return {"about": problem, "probe": None, "curve": None, "alpha": gr.update(), "layers": ""}
    reach, start = slider_range(fit)
    return {"about": "Try a conflict prompt, e.g. `the circle is red . what color is the circle ?` on a scene with a "
                     "circle of another colour; positive α pushes the answer toward the image.",
            "probe": probe_curve(fit.probe_accuracy, fit.extra.get("layers", [])),
            "curve": alpha_curve(fit.extra["sweep"]) if "sweep" in fit.extra else None,
            "alpha": gr.update(minimum=-reach, maximum=reach, value=start, step=reach / 80,
                               label=f"α × {fit.unit} (toward the image > 0 > toward the text)"),
            "layers": ",".join(str(x) for x in fit.extra.get("layers", [0]))}


def build_steer_tab(current: Serving, image: gr.Image, prompt: gr.Textbox, max_new: gr.Slider,
                    folder: str | Path | None = None) -> None:
    """Lay out the Steer tab inside the current Blocks context and wire its events; the fit is
    the current session's (the tab says so when the model has none)."""
    source = str(folder) if folder else None
    start = overview(current.session, source)
    about = gr.Markdown(start["about"], elem_id="steer-about")
    with gr.Row():
        probe = gr.Plot(start["probe"], label="probe accuracy by layer")
        curve = gr.Plot(start["curve"], label="α sweep")
    fit, _ = load_fit(current.session, source)
    reach, value = slider_range(fit) if fit is not None else (MAX_ALPHA, 1.0)
    with gr.Row():
        alpha = gr.Slider(-reach, reach, value=value, step=reach / 80,
                          label=f"α × {fit.unit if fit else 'the steering vector'} (toward the image > 0 > toward the text)")
        layers = gr.Textbox(start["layers"], label="layers to steer")
        run = gr.Button("Steer", variant="primary")
    with gr.Row():
        plain, steered = gr.Textbox(label="answer"), gr.Textbox(label="steered answer")
    spec = gr.State(None)
    export_controls(current, "steer", spec)
    answers = {"plain": plain, "steered": steered, "curve": curve, "spec": spec}
    handler = keyed(serving(current, steer, source), answers)
    run.click(handler, [image, prompt, max_new, alpha, layers], list(answers.values()), api_name="steer")
    alpha.release(handler, [image, prompt, max_new, alpha, layers], list(answers.values()),
                  api_name="steer_on_release")
    shown = {"about": about, "probe": probe, "curve": curve, "alpha": alpha, "layers": layers}
    current.resets |= {component: functools.partial(_overview_part, source, name) for name, component in shown.items()}
    current.resets |= {plain: lambda session: None, steered: lambda session: None}


def _overview_part(folder: str | None, name: str, session: ModelSession):
    return overview(session, folder)[name]
