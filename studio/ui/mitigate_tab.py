"""The "Mitigate" tab: one image and prompt decoded by several methods side by side.

Tokens where a method departs from greedy are highlighted, words wrong against ground truth
are marked, and choosing a token shows the expert, amateur and contrast distributions that
picked it (and, for SID, which vision tokens the amateur kept).
"""
from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np
import plotly.graph_objects as go

from studio.decoding import strategy_by_name
from studio.engine.errors import InputError
from studio.engine.session import Generation, ModelSession
from studio.ui.common import ExportSpec, Serving, export_controls, keyed, serving, user_errors
from studio.world.samples import scene_of
from studio.world.scenes import Scene
from studio.world.truth import judge_words
from views.common import grid_figure
from views.decoding import step_distributions

METHODS = ("greedy", "vcd", "sid", "icd", "anchors")
LABELS = {"wrong": "#e5484d", "diverges": "#f5a623", "wrong+diverges": "#b10dc9"}


def method_settings(methods: list[str], alpha: float, beta: float, noise_step: float, sid_layer: float,
                    keep_ratio: float, sid_prune: str = "mask") -> dict[str, dict]:
    """Each chosen method's parameters from the slider settings (greedy has none; α is the
    contrast strength of VCD, SID and ICD and the edit strength of anchors, pull = push)."""
    if not methods:
        raise InputError(f"choose at least one method: {', '.join(METHODS)}")
    contrast = {"alpha": alpha, "beta": beta}
    settings: dict[str, dict] = {"greedy": {}, "vcd": {**contrast, "noise_step": int(noise_step)},
                                 "sid": {**contrast, "layer": int(sid_layer), "keep_ratio": keep_ratio,
                                         "prune": sid_prune},
                                 "icd": contrast, "anchors": {"pull": alpha}}
    unknown = [name for name in methods if name not in settings]
    if unknown:
        raise InputError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    return {name: settings[name] for name in methods}


def _chips(generation: Generation, greedy: Generation | None, scene: Scene | None) -> list:
    words = [t.text for t in generation.tokens]
    wrong = judge_words(scene, generation.prompt.prompt, words) if scene else [None] * len(words)
    base = [t.id for t in greedy.tokens] if greedy else []
    chips = []
    for i, (token, bad) in enumerate(zip(generation.tokens, wrong)):
        diverges = greedy is not None and (i >= len(base) or base[i] != token.id)
        label = "+".join(x for x, on in (("wrong", bad), ("diverges", diverges)) if on) or None
        chips.append((token.text, label))
    return chips


def _rows(generations: dict[str, Generation], truth: Scene | None) -> dict:
    """One chip row per method slot: the answer where the method ran, hidden where it did not."""
    greedy = generations.get("greedy")
    return {m: gr.update(value=_chips(generations[m], greedy, truth), visible=True) if m in generations
            else gr.update(value=None, visible=False) for m in METHODS}


@user_errors
def mitigate(session: ModelSession, image_path: str | None, prompt: str, max_new_tokens: float, methods: list[str],
             alpha: float, beta: float, noise_step: float, sid_layer: float, keep_ratio: float,
             sid_prune: str = "mask", progress=gr.Progress()):
    """Decode with each chosen method; one chip row per method slot, shown as each finishes (a
    press of Stop ends the run between methods), then the traces and what to export."""
    if image_path is None:
        raise InputError("the mitigations contrast image evidence: pick a sample or upload an image")
    settings = method_settings(methods, alpha, beta, noise_step, sid_layer, keep_ratio, sid_prune)
    strategies = {name: strategy_by_name(name, **params) for name, params in settings.items()}
    for strategy in strategies.values():
        strategy.check(session)
    prepared = session.prepare(image_path, prompt)
    assert prepared.image is not None
    truth = scene_of(prepared.image)
    generations = {}
    for step, (name, strategy) in enumerate(strategies.items()):
        progress(step / len(strategies), desc=f"decoding: {name}")
        generations[name] = session.generate(prepared, max_new_tokens=int(max_new_tokens), strategy=strategy)
        yield _rows(generations, truth)
    traces: dict[str, Any] = {name: _trace_state(g) for name, g in generations.items()}
    traces["_image"] = np.asarray(prepared.image)
    traces["_grid"] = prepared.token_map
    spec = ExportSpec(image_path, prompt, int(max_new_tokens),
                      [{"probe": "decode", "params": {"method": n, "settings": settings[n]}} for n in generations])
    yield {"traces": traces, "spec": spec, **_rows(generations, truth)}


def _trace_state(generation: Generation) -> dict:
    return {"tokens": [t.text for t in generation.tokens], **generation.trace}


@user_errors
def show_step(session: ModelSession, traces: dict | None, method: str, step: float) -> dict:
    """Expert, amateur and contrast distributions at one step of one method; SID's kept tokens."""
    if not traces or method not in traces:
        raise InputError(f"decode with {method!r} first (choose it and press Decode)")
    trace = traces[method]
    n = len(trace["tokens"])
    if not 0 <= int(step) < n:
        raise InputError(f"step {int(step)} is out of range: {method} generated {n} tokens (0..{n - 1})")
    step = int(step)
    if "expert" not in trace:
        return {"distributions": go.Figure(layout={"title": f"{method} has no contrast branch"}), "kept": None}
    figure = step_distributions(trace, step, session.decode_token, method)
    kept = None
    if trace.get("kept"):  # one selection per step, or one for every step (SID's prune="drop")
        kept = _kept_figure(traces["_image"], traces["_grid"], trace["kept"][min(step, len(trace["kept"]) - 1)], step)
    return {"distributions": figure, "kept": kept}


def _kept_figure(image: np.ndarray, token_map, kept: list[int], step: int) -> go.Figure:
    grid_index = token_map.main_grid
    grid = token_map.grids[grid_index]
    values = np.zeros((grid.rows, grid.cols))
    for pos in kept:
        p = token_map.image.get(pos)
        if p is not None and p.grid == grid_index and p.row is not None:
            values[p.row, p.col] = 1.0
    as_dict = {"rows": grid.rows, "cols": grid.cols, "box": list(grid.box)}
    return grid_figure(image, as_dict, values, f"SID step {step}: vision tokens the amateur kept",
                       colorscale="Greens", zmin=0, zmax=1, colorbar="kept")


def step_picker(method: str):
    """A select handler for ``method``'s chip row: the method and the clicked token's index."""
    def pick_step(evt: gr.SelectData) -> tuple[str, int]:
        return method, int(evt.index)
    return pick_step


def sid_layer(session: ModelSession) -> int:
    """The SID slider's start: the paper's layer 2, within the model's depth."""
    return min(2, max(1, session.n_layers - 1))


def build_mitigate_tab(current: Serving, image: gr.Image, prompt: gr.Textbox, max_new: gr.Slider) -> None:
    """Lay out the Mitigate tab inside the current Blocks context and wire its events."""
    traces, spec = gr.State(None), gr.State(None)
    with gr.Row():
        methods = gr.CheckboxGroup(list(METHODS), value=["greedy", "vcd", "sid"], label="methods", elem_id="mitigate-methods")
        run = gr.Button("Decode", variant="primary")
        stop = gr.Button("Stop", variant="stop", size="sm")
    with gr.Row():
        alpha = gr.Slider(0, 5, value=1.0, step=0.1, label="α (contrast strength; anchors: edit strength)")
        beta = gr.Slider(0, 1, value=0.1, step=0.01, label="β (plausibility)")
        noise = gr.Slider(0, 999, value=500, step=1, label="VCD noise step (of 1000)")
        layer = gr.Slider(1, max(2, current.session.n_layers - 1), value=sid_layer(current.session), step=1,
                          label="SID layer")
        keep = gr.Slider(0.01, 1, value=0.17, step=0.01, label="SID keep ratio")
        prune = gr.Radio(["mask", "drop"], value="mask", label="SID amateur",
                         info="mask: reselect every step (reference code); drop: select once, cheaper prompt pass")
    rows = [gr.HighlightedText(label=m, color_map=LABELS, combine_adjacent=False, visible=m in ("greedy", "vcd", "sid"),
                               elem_id=f"mitigate-{m}") for m in METHODS]
    selected = gr.Dropdown(list(METHODS), value="vcd", label="method to inspect")
    step = gr.Number(0, precision=0, label="step (click a token)")
    with gr.Row():
        dist, kept = gr.Plot(label="expert / amateur / contrast"), gr.Plot(label="SID kept vision tokens")
    export_controls(current, "mitigate", spec)
    decoded = {"traces": traces, "spec": spec, **dict(zip(METHODS, rows))}
    decoding = run.click(keyed(serving(current, mitigate), decoded),
                         [image, prompt, max_new, methods, alpha, beta, noise, layer, keep, prune], list(decoded.values()),
                         api_name="mitigate")
    stop.click(None, None, None, cancels=[decoding], api_name="stop_mitigate")
    shown = {"distributions": dist, "kept": kept}
    showing = keyed(serving(current, show_step), shown)
    for name, row in zip(METHODS, rows):
        row.select(step_picker(name), None, [selected, step], api_name=f"pick_step_{name}").then(
            showing, [traces, selected, step], list(shown.values()), api_name=f"show_step_{name}")
    current.resets[layer] = lambda session: gr.update(maximum=max(2, session.n_layers - 1), value=sid_layer(session))
    current.clear(traces, dist, kept, *rows)
    gr.Button("Show step").click(showing, [traces, selected, step], list(shown.values()), api_name="show_step")
