"""The Gradio studio. Handlers are plain top-level functions taking the session first (the
session current when the event fires: the Model box can open another one); the layout lives
in :func:`build_app`, and events are wired one line each.

Every handler turns a :class:`~studio.engine.errors.StudioError` into a ``gr.Error`` so the user
sees one clear message and the app keeps serving.
"""
from __future__ import annotations

import functools
from pathlib import Path

import gradio as gr
from PIL import Image

from studio.engine.errors import StudioError
from studio.engine.images import load_image
from studio.engine.loading import EMBEDDED
from studio.engine.session import Generation, ModelSession
from studio.ui.common import ExportSpec, Serving, export_controls, keyed, save_png, serving, user_errors
from studio.ui.concepts_tab import build_concepts_tab
from studio.ui.inspect_tab import build_inspect_tab
from studio.ui.mitigate_tab import build_mitigate_tab
from studio.ui.steer_tab import build_steer_tab
from studio.world.anchors import register as register_world_anchors
from studio.world.language import caption
from studio.world.render import is_world_render
from studio.world.samples import load_samples, scene_of
from studio.world.scenes import Scene
from studio.world.truth import judge_words

CONFIDENCE_COLOURS = {"wrong": "#e5484d", "p ≥ 0.9": "#46a758", "0.5 ≤ p < 0.9": "#f5d90a", "p < 0.5": "#f76b15"}
DEFAULT_PROMPT = "describe the image ."


def _confidence(prob: float) -> str:
    return "p ≥ 0.9" if prob >= 0.9 else "0.5 ≤ p < 0.9" if prob >= 0.5 else "p < 0.5"


WORLD_ONLY = ("**This image is not a scene of the world the embedded model was trained on**: that model only "
              "knows its 64x64 scenes of coloured shapes, so its answers about photos mean nothing. Open a real "
              "model in the Model box for photos.")


def truth_text(scene: Scene | None) -> str:
    return f"**Ground truth:** {caption(scene)}" if scene else "_No ground truth for this image._"


def image_note(session: ModelSession, image: Image.Image) -> str:
    """Ground truth for a sample scene; for the embedded model, a warning on images that are not
    world scenes; otherwise that there is no ground truth."""
    scene = scene_of(image)
    if scene is None and session.source == EMBEDDED and not is_world_render(image):
        return WORLD_ONLY
    return truth_text(scene)


@user_errors
def load_upload(session: ModelSession, file_path: str | None) -> dict:
    """Check an uploaded file and show it (as a clean RGB PNG), with ground truth if it is a sample."""
    if not file_path:
        raise StudioError("no file was uploaded")
    image = load_image(file_path, name=Path(file_path).name)
    return {"image": save_png(image), "truth": image_note(session, image)}


@user_errors
def open_model(current: Serving, header: gr.Markdown, status: gr.Markdown, source: str, trust_remote_code: bool,
               device_map: str = "", max_memory: str = "", progress=gr.Progress()) -> dict:
    """Load another model (a local folder or a Hub id, with the launch's device and dtype, safetensors
    only, remote code only when asked, split over devices when a device map or memory budget is
    given) and serve it; every tab resets (the components are the keys, since the tabs registered
    them). A model that cannot be opened gets one message and the current one keeps serving."""
    source = (source or "").strip() or EMBEDDED
    progress(0.1, desc=f"loading {source}")
    placement = {"device_map": (device_map or "").strip() or None, "max_memory": (max_memory or "").strip() or None}
    session = ModelSession.load(source, trust_remote_code=bool(trust_remote_code), **current.options, **placement)
    progress(0.9, desc="resetting the tabs")
    current.session = session
    return {header: header_text(session), status: f"Opened `{source}`.",
            **{component: reset(session) for component, reset in current.resets.items()}}


def header_text(session: ModelSession) -> str:
    return (f"## vlm-studio\nModel: `{session.source}` ({session.adapter.family}, {session.n_layers} decoder layers, "
            f"{session.device.type})")


def pick_sample(evt: gr.SelectData) -> dict:
    """Show the chosen sample scene and its ground truth."""
    sample = load_samples()[evt.index]
    return {"image": str(sample.path), "truth": truth_text(sample.scene)}


def describe_generation(generation: Generation, scene: Scene | None) -> tuple[list, list]:
    """Highlighted answer tokens and the per-token table, with words judged against ground truth."""
    words = [t.text for t in generation.tokens]
    verdicts = judge_words(scene, generation.prompt.prompt, words) if scene else [None] * len(words)
    highlighted = [(t.text, "wrong" if wrong else _confidence(t.prob)) for t, wrong in zip(generation.tokens, verdicts)]
    rows = [[i, t.text.strip(), round(t.prob, 4), " · ".join(f"{w.strip()} {p:.2f}" for w, p in t.top),
             {True: "wrong", False: "right", None: ""}[wrong]]
            for i, (t, wrong) in enumerate(zip(generation.tokens, verdicts))]
    return highlighted, rows


def status_line(n_tokens: int, wrong: int | None) -> str:
    """How many tokens, and how many words are wrong against ground truth (None: no ground truth)."""
    if wrong is None:
        return f"{n_tokens} tokens; no ground truth for this image"
    if wrong == 0:
        return f"{n_tokens} tokens, none wrong against ground truth"
    return f"{n_tokens} tokens, **{wrong} wrong against ground truth**"


@user_errors
def generate(session: ModelSession, image_path: str | None, prompt: str, max_new_tokens: float) -> dict:
    """Generate an answer for the shown image and prompt; mark words wrong against ground truth
    (and keep what to export: a greedy ``decode`` run)."""
    prepared = session.prepare(image_path, prompt)
    generation = session.generate(prepared, max_new_tokens=int(max_new_tokens))
    truth = scene_of(prepared.image) if prepared.image is not None else None
    highlighted, rows = describe_generation(generation, truth)
    wrong = sum(r[4] == "wrong" for r in rows) if truth else None
    spec = ExportSpec(image_path, prompt, int(max_new_tokens), [{"probe": "decode", "params": {"method": "greedy"}}])
    status = status_line(len(rows), wrong)
    if prepared.image is not None and WORLD_ONLY == image_note(session, prepared.image):
        status += "\n\n" + WORLD_ONLY
    return {"answer": highlighted, "table": rows, "status": status, "spec": spec}


def build_app(session: ModelSession, concepts: str | None = None, steering: str | None = None,
              **options) -> gr.Blocks:
    """The studio's Blocks app, first serving ``session``: a Model box, shared inputs, then one tab
    per task. ``concepts`` / ``steering``: folders of a dictionary and a preference fit (default:
    the shipped ones in studio/assets); ``options``: loading options (device, dtype) for models
    opened from the Model box."""
    register_world_anchors()  # the world's text-to-image model for the anchors decoding method
    samples = load_samples()
    current = Serving(session, **options)
    with gr.Blocks(title="vlm-studio") as demo:
        header = gr.Markdown(header_text(session))
        with gr.Accordion("Model", open=False):
            with gr.Row():
                source = gr.Textbox(label="local folder or Hugging Face id ('embedded' for the world model)",
                                    elem_id="model-source", scale=4)
                trust = gr.Checkbox(False, label="allow the model's own code (trust_remote_code)")
                open_button = gr.Button("Open", elem_id="model-open")
            with gr.Row():
                device_map = gr.Textbox("", label="split over devices (device map: auto, balanced, or a JSON file; "
                                              "empty: one device)", elem_id="model-device-map")
                max_memory = gr.Textbox("", label="memory per device, e.g. 0=20GiB,cpu=64GiB (the rest to disk)",
                                        elem_id="model-max-memory")
            model_status = gr.Markdown(elem_id="model-status")
        with gr.Row():
            with gr.Column(scale=2):
                gallery = gr.Gallery([(str(s.path), s.scene.split) for s in samples], label="Sample scenes",
                                     columns=6, height=170, allow_preview=False, elem_id="samples")
                upload = gr.File(label="…or upload an image", type="filepath", height=90)
            with gr.Column(scale=1):
                image = gr.Image(label="Image", type="filepath", interactive=False, height=220)
                truth = gr.Markdown(elem_id="ground-truth")
            with gr.Column(scale=2):
                prompt = gr.Textbox(DEFAULT_PROMPT, label="Prompt", lines=2)
                max_new = gr.Slider(1, 128, value=48, step=1, label="Max new tokens")
        with gr.Tabs():
            with gr.Tab("Generate"):
                spec = gr.State(None)
                run = gr.Button("Generate", variant="primary")
                status = gr.Markdown(elem_id="generate-status")
                answer = gr.HighlightedText(label="Answer (colour = probability; red = wrong vs ground truth)",
                                            color_map=CONFIDENCE_COLOURS, show_legend=True, combine_adjacent=False,
                                            elem_id="generate-answer")
                table = gr.Dataframe(headers=["#", "token", "p", "top alternatives", "vs truth"],
                                     label="Tokens", interactive=False)
                export_controls(current, "generate", spec)
            with gr.Tab("Inspect"):
                build_inspect_tab(current, image, prompt, max_new)
            with gr.Tab("Mitigate"):
                build_mitigate_tab(current, image, prompt, max_new)
            with gr.Tab("Concepts"):
                build_concepts_tab(current, image, prompt, max_new, concepts)
            with gr.Tab("Steer"):
                build_steer_tab(current, image, prompt, max_new, steering)
        shown = {"image": image, "truth": truth}
        gallery.select(keyed(pick_sample, shown), None, list(shown.values()), api_name="pick_sample")
        upload.upload(keyed(serving(current, load_upload), shown), upload, list(shown.values()), api_name="load_image")
        answered = {"answer": answer, "table": table, "status": status, "spec": spec}
        run.click(keyed(serving(current, generate), answered), [image, prompt, max_new],
                  list(answered.values()), api_name="generate")
        current.resets |= {answer: lambda s: None, table: lambda s: None, status: lambda s: ""}
        opened = [header, model_status, *current.resets]
        open_button.click(functools.partial(open_model, current, header, model_status),
                          [source, trust, device_map, max_memory], opened, api_name="open_model")
    return demo
