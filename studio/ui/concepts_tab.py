"""The "Concepts" tab: a sparse-autoencoder dictionary's feature map, each feature's grounding
(top patches, words, heat map on the current image) and clamping a feature during generation."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from probes import ProbeRequest, run_probe
from probes.answers import fit_reference, fitted
from studio.concepts.dictionary import top_words
from studio.concepts.explore import (
    Dictionary,
    activations,
    image_heat,
    top_crops,
)
from studio.engine.assets import asset
from studio.engine.errors import InputError, StudioError
from studio.engine.session import ModelSession
from studio.ui.clickable_plot import clickable_plot, clicked_point
from studio.ui.common import ExportSpec, Serving, export_controls, keyed, serving, user_errors
from views.common import grid_figure
from views.concepts import crops_figure, feature_map, top_features_table, words_figure

DEFAULT_DICTIONARY = asset("concepts")


def load_dictionary(session: ModelSession, folder: str | Path | None) -> tuple[Dictionary | None, str]:
    """The dictionary for this session, or None and the reason (shown in the tab)."""
    folder = Path(folder) if folder else DEFAULT_DICTIONARY
    try:
        return fitted(session, "clamp", folder, Dictionary.load), ""
    except StudioError as err:
        return None, (f"No concept dictionary for this model ({err}). Train one with "
                      f"`vlm-studio concepts train --out DIR` and launch with `--concepts DIR`.")


def quality_text(dictionary: Dictionary) -> str:
    q = dictionary.info.get("quality", {})
    if not q:
        return f"Layer {dictionary.layer}, {dictionary.n_features} features."
    return (f"Layer {dictionary.layer}, {dictionary.n_features} features · explained variance "
            f"{q['explained_variance']:.4f} (patches {q.get('explained_variance_patches', float('nan')):.4f}, "
            f"words {q.get('explained_variance_words', float('nan')):.4f}) · L0 {q['l0']:.1f} · "
            f"dead {q['dead_share']:.1%} · caption loss "
            f"{q['loss_clean']:.3f} → {q['loss_spliced']:.3f} spliced · attribute values with a feature of "
            f"AUROC ≥ 0.9: {q['pure_share']:.0%}")


def _dictionary(session: ModelSession, folder: str | Path | None) -> Dictionary:
    dictionary, problem = load_dictionary(session, folder)
    if dictionary is None:
        raise InputError(problem)
    return dictionary


def overview(session: ModelSession, folder: str | Path | None) -> dict:
    """The tab's header and feature map for this session's dictionary (or why there is none)."""
    dictionary, problem = load_dictionary(session, folder)
    if dictionary is None:
        return {"about": problem, "map": None}
    umap = dictionary.info.get("umap")
    return {"about": quality_text(dictionary),
            "map": feature_map(umap, dictionary.info.get("features", [])).to_json() if umap else None}


@user_errors
def show_feature(session: ModelSession, folder: str | None, image_path: str | None, prompt: str,
                 feature: float) -> dict:
    """A feature's grounding: top held-out patches, top words, heat map on the current image, and the
    map (plotly JSON) with the feature marked."""
    d = _dictionary(session, folder)
    f = d.check_feature(int(feature))
    info = d.info.get("features", [])
    label = f"{info[f]['attribute']}={info[f]['value']} (AUROC {info[f]['auroc']:.2f})" if info else ""
    crops = crops_figure(top_crops(d, f), f"feature {f} {label}: strongest held-out patches")
    direction = d.sae.W_dec[f].detach().float().cpu().numpy()[None]
    words, scores = zip(*top_words(session, direction, n=8)[0])
    heat = None
    if image_path is not None:
        prepared = session.prepare(image_path, prompt)
        acts = activations(session, d, prepared)[:, f]
        grid = prepared.token_map.grids[prepared.token_map.require_main_grid()]
        heat = grid_figure(np.asarray(prepared.image), asdict(grid), image_heat(prepared.token_map, acts),
                           f"feature {f} on this image", colorbar="activation")
    figure = feature_map(d.info["umap"], info, f).to_json() if "umap" in d.info else None
    return {"crops": crops, "words": words_figure(list(words), list(scores), f"feature {f}: words it promotes"),
            "heat": heat, "map": figure}


@user_errors
def image_features(session: ModelSession, folder: str | None, image_path: str | None,
                   prompt: str) -> list[list]:
    """The features most active on the current image's patches."""
    d = _dictionary(session, folder)
    if image_path is None:
        raise InputError("pick a sample or upload an image first")
    prepared = session.prepare(image_path, prompt)
    acts = activations(session, d, prepared)[prepared.token_map.image_positions]
    return top_features_table(acts.max(0), d.info.get("features", []))


@user_errors
def clamp(session: ModelSession, folder: str | None, image_path: str | None, prompt: str,
          max_new_tokens: float, feature: float, value: float, where: str) -> dict:
    """The answer as it is and with the feature clamped (at the image positions or everywhere),
    and what to export (a ``clamp`` run)."""
    _dictionary(session, folder)
    if image_path is None:
        raise InputError("pick a sample or upload an image first")
    params = {"feature": int(feature), "value": float(value), "where": where,
              "dictionary": fit_reference(folder or DEFAULT_DICTIONARY, "concepts")}
    result: Any = run_probe(session, "clamp", ProbeRequest(image_path, prompt, int(max_new_tokens)), **params)
    spec = ExportSpec(image_path, prompt, int(max_new_tokens), [{"probe": "clamp", "params": params}], [result])
    return {"plain": result.baseline_text, "clamped": result.text, "spec": spec}


def pick_feature(rows, evt: gr.SelectData) -> int:
    return int(rows.iloc[evt.index[0], 0]) if hasattr(rows, "iloc") else int(rows[evt.index[0]][0])


def build_concepts_tab(current: Serving, image: gr.Image, prompt: gr.Textbox, max_new: gr.Slider,
                       folder: str | Path | None = None) -> None:
    """Lay out the Concepts tab inside the current Blocks context and wire its events; the
    dictionary is the current session's (the tab says so when the model has none)."""
    source = str(folder) if folder else None
    start = overview(current.session, source)
    about = gr.Markdown(start["about"], elem_id="concepts-about")
    with gr.Row():
        the_map = clickable_plot(start["map"], "feature map: click a point", "concepts-map")
        with gr.Column():
            feature = gr.Number(0, precision=0, label="feature", elem_id="concepts-feature")
            show = gr.Button("Show feature", variant="primary")
            on_image = gr.Button("Features on this image")
            table = gr.Dataframe(headers=["feature", "max on image", "best attribute", "AUROC"], interactive=False)
    with gr.Row():
        crops, words, heat = gr.Plot(label="top patches"), gr.Plot(label="words"), gr.Plot(label="on this image")
    with gr.Row():
        value = gr.Number(10.0, label="clamp value")
        where = gr.Radio(["image", "all"], value="image", label="clamp at")
        run = gr.Button("Clamp and generate")
    with gr.Row():
        plain, clamped = gr.Textbox(label="answer"), gr.Textbox(label="answer with the feature clamped")
    spec = gr.State(None)
    export_controls(current, "concepts", spec)
    grounding = {"crops": crops, "words": words, "heat": heat, "map": the_map}
    showing = keyed(serving(current, show_feature, source), grounding)
    show.click(showing, [image, prompt, feature], list(grounding.values()), api_name="show_feature")
    on_image.click(serving(current, image_features, source), [image, prompt], table, api_name="image_features")
    table.select(pick_feature, table, feature, api_name="pick_feature").then(
        showing, [image, prompt, feature], list(grounding.values()), api_name="show_picked_feature")
    the_map.click(clicked_point, None, feature, api_name="pick_map_feature").then(
        showing, [image, prompt, feature], list(grounding.values()), api_name="show_map_feature")
    answers = {"plain": plain, "clamped": clamped, "spec": spec}
    run.click(keyed(serving(current, clamp, source), answers),
              [image, prompt, max_new, feature, value, where], list(answers.values()), api_name="clamp")
    current.resets |= {about: lambda session: overview(session, source)["about"],
                       the_map: lambda session: overview(session, source)["map"]}
    current.clear(table, crops, words, heat, plain, clamped)
