"""The "Inspect" tab: every panel follows one selected generated token, one layer and one patch.

``inspect`` runs the cheap probes once (logit lens, attention, detector, drift: the cached
generation pass, whose states and attention inputs they read, plus drift's blanked-image and
text-only passes) and keeps their results in the browser session's
state; choosing a token, a layer or a patch then only redraws from that state. Attribution
is computed on request for the selected token and kept per token.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from typing import Any

import gradio as gr
import numpy as np

from probes import REGISTRY, ProbeRequest, ProbeResult, run_probe
from probes.attention import AttentionResult
from probes.attribution import AttributionParams
from probes.detector import DetectorResult
from probes.drift import DriftResult
from probes.logit_lens import LogitLensResult
from studio.adapters import PatchGrid
from studio.engine.errors import InputError
from studio.engine.images import load_image
from studio.engine.session import ModelSession
from studio.ui.common import ExportSpec, Serving, export_controls, keyed, serving, user_errors
from studio.world.samples import scene_of
from studio.world.scenes import Scene
from studio.world.truth import judge_words
from views import attention as attention_view
from views import attribution as attribution_view
from views import detector as detector_view
from views import drift as drift_view
from views import logit_lens as lens_view
from views import relevancy as relevancy_view
from views.registry import FIGURES


@dataclass
class Inspection:
    """What the tab holds for one browser session."""

    image: np.ndarray
    lens: LogitLensResult
    attention: AttentionResult
    detector: DetectorResult
    drift: DriftResult
    request: ProbeRequest
    attributions: dict = field(default_factory=dict)
    relevancies: dict = field(default_factory=dict)

    @property
    def spec(self) -> ExportSpec:
        """The runs behind the panels (the attributions made so far included), with their results."""
        runs: list[dict] = [{"probe": n, "params": {}} for n in ("logit_lens", "attention", "detector", "drift")]
        results: list[ProbeResult] = [self.lens, self.attention, self.detector, self.drift]
        for index, result in sorted(self.attributions.items()):
            runs.append({"probe": "attribution", "params": {"answer_index": index}})
            results.append(result)
        for index, result in sorted(self.relevancies.items()):
            runs.append({"probe": "relevancy", "params": {"answer_indices": [index]}})
            results.append(result)
        r = self.request
        return ExportSpec(r.image, r.prompt, r.max_new_tokens, runs, results)


def _checked_token(state: Inspection | None, token_index: float) -> tuple[Inspection, int]:
    if state is None:
        raise InputError("run Inspect first: there is no answer to select from")
    n = len(state.lens.answer_positions)
    index = int(token_index)
    if not 0 <= index < n:
        raise InputError(f"token index {index} is out of range: the answer has {n} tokens (0..{n - 1})")
    return state, index


def _checked_layer(state: Inspection, layer: float) -> int:
    n = state.lens.answer_probs.shape[0]
    if not 0 <= int(layer) < n:
        raise InputError(f"layer {int(layer)} is out of range: the model has layers 0..{n - 1}")
    return int(layer)


FIGURE_SLOTS = 3  # default figures of any registered probe shown in the registry accordion
TOKEN_PANELS = ("heat", "grid", "trajectory", "attention", "rollout", "share", "boxes")


def token_panels(state: Inspection, index: int, layer: int) -> dict:
    """Figures that follow the selected token: lens heat map, decoded grid, trajectory, attention."""
    token_id = state.lens.answer_ids[index]
    return {"heat": lens_view.heatmap(state.lens, token_id),
            "grid": lens_view.patch_grid(state.lens, layer, token_id, state.image),
            "trajectory": lens_view.trajectory(state.lens, index),
            "attention": attention_view.patch_attention(state.attention, index, layer, None, state.image),
            "rollout": attention_view.rollout(state.attention, index, state.image),
            "share": attention_view.image_share(state.attention, index),
            "boxes": detector_view.boxes(state.detector, state.image, selected=index)}


def _chips(state: Inspection, scene: Scene | None, prompt: str) -> list:
    tokens = [state.lens.tokens[p] for p in state.lens.answer_positions]
    verdicts = judge_words(scene, prompt, tokens) if scene else [None] * len(tokens)
    return [(t, "wrong" if v else None) for t, v in zip(tokens, verdicts)]


@user_errors
def inspect(session: ModelSession, image_path: str | None, prompt: str, max_new_tokens: float,
            progress=gr.Progress()):
    """Run the cached probes for the shown image and prompt; draw the panels for token 0.
    Yields after each probe, so a press of Stop ends it between probes."""
    if image_path is None:
        raise InputError("the Inspect panels need an image: pick a sample or upload one")
    request = ProbeRequest(image_path, prompt, int(max_new_tokens))
    results: dict[str, Any] = {}
    for step, name in enumerate(("logit_lens", "attention", "detector", "drift")):
        progress(step / 4, desc=f"probe: {name}")
        results[name] = run_probe(session, name, request)
        yield {}
    if not results["logit_lens"].answer_positions:
        raise InputError("the model generated no tokens for this prompt; nothing to inspect")
    state = Inspection(image=np.asarray(load_image(image_path)), lens=results["logit_lens"],
                       attention=results["attention"], detector=results["detector"], drift=results["drift"],
                       request=request)
    layer = state.lens.answer_probs.shape[0] // 2
    yield {"state": state, "chips": _chips(state, scene_of(image_path), prompt), "token": 0,
           "cost": attribution_cost(len(state.attention.image_positions)),
           "layer": gr.update(maximum=state.lens.answer_probs.shape[0] - 1, value=layer), **token_panels(state, 0, layer),
           "drift": drift_view.drift_curve(state.drift), "detector": detector_view.rows(state.detector)}


@user_errors
def show_token(state: Inspection | None, token_index: float, layer: float) -> dict:
    """Redraw the token-following panels for ``token_index`` at ``layer`` (from the stored results)."""
    state, index = _checked_token(state, token_index)
    return token_panels(state, index, _checked_layer(state, layer))


def attribution_cost(image_tokens: int) -> str:
    """What one attribution press will cost, said before it runs."""
    params = AttributionParams()
    return (f"Attribution of one token: about {params.forward_passes(image_tokens)} forward passes "
            f"(occlusion of at most {params.occlusion_regions} regions of the {image_tokens} image tokens, "
            f"integrated gradients with {params.ig_steps} steps for pixels and for the prompt).")


def pick_token(evt: gr.SelectData) -> int:
    """The index of the chip the user clicked."""
    return int(evt.index)


@user_errors
def show_patch(state: Inspection | None, token_index: float, x: float, y: float) -> dict:
    """What the patch under pixel (x, y) means to the model: its top words per layer, and the
    selected token's probability there, layer by layer."""
    state, index = _checked_token(state, token_index)
    if state.lens.image_size is None or state.lens.main_grid is None:
        raise InputError("patch geometry unknown for this answer: there is no image grid to click on")
    w, h = state.lens.image_size
    if not (0 <= x < w and 0 <= y < h):
        raise InputError(f"pixel ({x:.0f}, {y:.0f}) is outside the {w}x{h} image")
    cell = PatchGrid.from_dict(state.lens.grids[state.lens.main_grid]).locate(x, y)
    if cell is None:
        raise InputError(f"pixel ({x:.0f}, {y:.0f}) is outside the part of the image the model sees")
    row, col = cell
    position = next(i for i, p in enumerate(state.lens.patch) if p == [state.lens.main_grid, row, col])
    return {"layers": lens_view.position_layers(state.lens, position),
            "trajectory": lens_view.position_trajectory(state.lens, position, state.lens.answer_ids[index]),
            "label": f"patch row {row}, col {col} (position {position})"}


def pick_patch(evt: gr.SelectData) -> tuple[float, float]:
    """Pixel coordinates of a click on the image."""
    return float(evt.index[0]), float(evt.index[1])


def patch_image(image_path: str | None) -> str | None:
    """The shown image, copied to the clickable patch picker."""
    return image_path


@user_errors
def attribute(session: ModelSession, state: Inspection | None, token_index: float,
              progress=gr.Progress()) -> dict:
    """Occlusion, integrated gradients and the relevancy map (Chefer et al.) of the selected
    token, beside the rollout panel (each computed once per token)."""
    state, index = _checked_token(state, token_index)
    if index not in state.relevancies:
        progress(0, desc="relevancy (one backward pass)")
        state.relevancies[index] = run_probe(session, "relevancy", state.request, answer_indices=(index,))
    if index not in state.attributions:
        progress(0.1, desc="attribution (occlusion + integrated gradients)")
        state.attributions[index] = run_probe(session, "attribution", state.request, answer_index=index)
    result = state.attributions[index]
    return {"occlusion": attribution_view.patch_scores(result, "occlusion", state.image),
            "ig_pixels": attribution_view.patch_scores(result, "ig_pixels", state.image),
            "ig_prompt": attribution_view.prompt_scores(result),
            "relevancy": relevancy_view.patches(state.relevancies[index], index, state.image)}


@user_errors
def run_any_probe(session: ModelSession, image_path: str | None, prompt: str, max_new_tokens: float, name: str,
                  params_json: str) -> dict:
    """Run any registered probe with JSON parameters; return its array shapes, a JSON file and its
    default figures (:data:`views.registry.FIGURES`, the first ``FIGURE_SLOTS`` of them)."""
    try:
        params = json.loads(params_json or "{}")
    except json.JSONDecodeError as err:
        raise InputError(f"parameters must be a JSON object, e.g. {{\"answer_index\": 1}} ({err.msg})") from None
    if not isinstance(params, dict):
        raise InputError("parameters must be a JSON object, e.g. {\"answer_index\": 1}")
    request = ProbeRequest(image_path, prompt, int(max_new_tokens))
    result = run_probe(session, name, request, **params)
    data = result.to_dict()
    handle = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".json", delete=False, mode="w")
    json.dump(data, handle)
    handle.close()
    figures = list(FIGURES[name](result, np.asarray(load_image(image_path)) if image_path else None).items())
    slots = {f"figure{k}": gr.update(value=figures[k][1] if k < len(figures) else None,
                                     label=f"{name}: {figures[k][0]}" if k < len(figures) else "figure")
             for k in range(FIGURE_SLOTS)}
    return {"shapes": {k: v["shape"] for k, v in data["arrays"].items()}, "file": handle.name, **slots}



def build_inspect_tab(current: Serving, image: gr.Image, prompt: gr.Textbox, max_new: gr.Slider) -> None:
    """Lay out the Inspect tab inside the current Blocks context and wire its events."""
    state = gr.State(None)
    token = gr.Number(0, label="selected token", precision=0, visible=False)
    px, py = gr.Number(visible=False), gr.Number(visible=False)
    with gr.Row():
        run = gr.Button("Inspect", variant="primary")
        layer = gr.Slider(0, max(1, current.session.n_layers - 1), value=current.session.n_layers // 2, step=1,
                          label="layer")
    chips = gr.HighlightedText(label="Answer: click a token (red = wrong vs ground truth)",
                               color_map={"wrong": "#e5484d"}, combine_adjacent=False, elem_id="inspect-chips")
    with gr.Row():
        heat, grid_plot = gr.Plot(label="logit lens"), gr.Plot(label="patch grid decoded")
    with gr.Row():
        traj = gr.Plot(label="emergence", elem_id="inspect-trajectory")
        boxes = gr.Plot(label="detector grounding")
    with gr.Row():
        attn, roll, share = gr.Plot(label="attention"), gr.Plot(label="rollout"), gr.Plot(label="image share")
    with gr.Row():
        patch_img = gr.Image(label="click a patch", type="filepath", interactive=False, height=260,
                             elem_id="inspect-patch-image")
        patch_plot = gr.Plot(label="patch, layer by layer", elem_id="inspect-patch-layers")
        patch_traj = gr.Plot(label="token at this patch", elem_id="inspect-patch-trajectory")
    patch_label = gr.Markdown(elem_id="inspect-patch-label")
    with gr.Row():
        drift_plot = gr.Plot(label="layer drift")
        detect_table = gr.Dataframe(headers=["token", "word", "internal confidence", "contextual similarity", "box"],
                                    label="hallucination detector", interactive=False)
    cost = gr.Markdown(elem_id="inspect-attribution-cost")
    with gr.Row():
        attr_button = gr.Button("Attribute the selected token (captum, relevancy)")
        stop = gr.Button("Stop", variant="stop", size="sm")
    with gr.Accordion("Every probe (from the registry)", open=False):
        with gr.Row():
            probe_name = gr.Dropdown(sorted(REGISTRY), value="logit_lens", label="probe")
            probe_params = gr.Textbox("{}", label="parameters (JSON)")
            probe_run = gr.Button("Run probe")
        probe_shapes, probe_file = gr.JSON(label="result arrays (shapes)"), gr.File(label="result (JSON)")
        with gr.Row():
            probe_figures = [gr.Plot(label="figure", elem_id=f"inspect-probe-figure{k}") for k in range(FIGURE_SLOTS)]
    with gr.Row():
        occl, igpix, igprompt = gr.Plot(label="occlusion"), gr.Plot(label="IG pixels"), gr.Plot(label="IG prompt")
        relevancy_plot = gr.Plot(label="relevancy (Chefer et al.)", elem_id="inspect-relevancy")

    export_controls(current, "inspect", state)

    panels = dict(zip(TOKEN_PANELS, (heat, grid_plot, traj, attn, roll, share, boxes)))
    inspected = {"state": state, "chips": chips, "token": token, "layer": layer, **panels, "drift": drift_plot,
                 "detector": detect_table, "cost": cost}
    patch = {"layers": patch_plot, "trajectory": patch_traj, "label": patch_label}
    attributed = {"occlusion": occl, "ig_pixels": igpix, "ig_prompt": igprompt, "relevancy": relevancy_plot}
    probed = {"shapes": probe_shapes, "file": probe_file, **{f"figure{k}": f for k, f in enumerate(probe_figures)}}
    inspecting = run.click(keyed(serving(current, inspect), inspected), [image, prompt, max_new],
                           list(inspected.values()), api_name="inspect")
    run.click(patch_image, image, patch_img, api_name="patch_image")
    chips.select(pick_token, None, token, api_name="pick_token").then(
        keyed(show_token, panels), [state, token, layer], list(panels.values()), api_name="show_token")
    layer.release(keyed(show_token, panels), [state, token, layer], list(panels.values()), api_name="show_layer")
    patch_img.select(pick_patch, None, [px, py], api_name="pick_patch").then(
        keyed(show_patch, patch), [state, token, px, py], list(patch.values()), api_name="show_patch")
    attributing = attr_button.click(keyed(serving(current, attribute), attributed), [state, token],
                                    list(attributed.values()), api_name="attribute")
    current.resets |= {token: lambda session: 0, layer: lambda session: gr.update(
        maximum=max(1, session.n_layers - 1), value=session.n_layers // 2)}
    current.clear(state, chips, cost, *panels.values(), drift_plot, detect_table, *patch.values(), *attributed.values(),
                  *probed.values())
    stop.click(None, None, None, cancels=[inspecting, attributing], api_name="stop_inspect")
    probe_run.click(keyed(serving(current, run_any_probe), probed), [image, prompt, max_new, probe_name, probe_params],
                    list(probed.values()), api_name="run_probe")
