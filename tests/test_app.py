"""The launched studio driven through gradio_client, as a real client would."""
import json

import pytest
from gradio_client import handle_file
from PIL import Image

from studio.ui.app import build_app, status_line
from studio.world.render import render
from studio.world.samples import load_samples
from studio.world.scenes import sample_scene


@pytest.fixture(scope="module")
def client(embedded, serve):
    return serve(build_app(embedded))


def generate(client, path, prompt):
    return client.predict(handle_file(str(path)), prompt, 40, api_name="/generate")


def test_generate_on_a_sample_scene_marks_words_against_truth(client, embedded):
    sample = next(s for s in load_samples() if s.scene.split == "cooccur")
    highlighted, table, status = generate(client, sample.path, "describe the image .")
    direct = embedded.generate(embedded.prepare(sample.path, "describe the image ."), max_new_tokens=40)
    words = [item["token"] for item in highlighted]
    assert "".join(words).strip() == direct.text
    assert len(table["data"]) == len(direct.tokens)
    wrong = sum(row[4] == "wrong" for row in table["data"])
    assert wrong == sum(item["class_or_confidence"] == "wrong" for item in highlighted)
    assert status == status_line(len(direct.tokens), wrong)


def test_the_status_counts_what_is_wrong():
    assert status_line(7, 0) == "7 tokens, none wrong against ground truth"
    assert status_line(7, 2) == "7 tokens, **2 wrong against ground truth**"
    assert "no ground truth" in status_line(7, None)


@pytest.mark.parametrize("case", ["text", "truncated", "tiny", "huge"])
def test_bad_uploads_get_a_clear_message_and_the_app_keeps_serving(client, tmp_path, case):
    path = tmp_path / "upload.png"
    if case == "text":
        path.write_text("this is not a picture")
    elif case == "truncated":
        render(sample_scene(0)).save(path)
        path.write_bytes(path.read_bytes()[:300])
    elif case == "tiny":
        Image.new("RGB", (1, 1)).save(path)
    else:
        Image.new("1", (20000, 20000)).save(path)
    with pytest.raises(Exception) as err:
        client.predict(handle_file(str(path)), api_name="/load_image")
    message = str(err.value)
    assert any(s in message for s in ("not an image", "truncated", "could not", "at least", "megapixels")), message
    good = tmp_path / "good.png"
    render(sample_scene(1)).save(good)
    shown, _ = client.predict(handle_file(str(good)), api_name="/load_image")
    assert Image.open(shown).size == (64, 64)


@pytest.mark.parametrize("prompt,needle", [("", "empty"), ("x" * 100_000, "limit")])
def test_bad_prompts_get_a_clear_message(client, tmp_path, prompt, needle):
    path = tmp_path / "s.png"
    render(sample_scene(3)).save(path)
    with pytest.raises(Exception, match=needle):
        generate(client, path, prompt)
    highlighted, _, _ = generate(client, path, "how many objects are there ?")
    assert highlighted


def test_inspect_then_follow_tokens_layers_and_patches(client, embedded):
    sample = next(s for s in load_samples() if s.scene.split == "cooccur")
    out = client.predict(handle_file(str(sample.path)), "describe the image .", 40, api_name="/inspect")
    chips = out[0]
    assert [c["token"] for c in chips] and any(c["class_or_confidence"] is None for c in chips)
    panels = client.predict(1, 1, api_name="/show_token")
    assert len(panels) == 7
    for layer in (0, 3):
        figures = client.predict(1, layer, api_name="/show_layer")
        assert len(figures) == 7
        assert f"layer {layer}:" in json.dumps(figures[1]), "the decoded grid follows the layer slider"
    _, _, label = client.predict(1, 20.0, 30.0, api_name="/show_patch")
    assert "row 3, col 2" in label


@pytest.mark.parametrize("args,api,needle", [
    ((99, 1), "/show_token", "out of range"),
    ((0, 17), "/show_token", "out of range|greater than maximum"),
    ((0, 500.0, 3.0), "/show_patch", "outside"),
])
def test_inspect_bad_selections_get_clear_messages(client, args, api, needle):
    sample = load_samples()[0]
    client.predict(handle_file(str(sample.path)), "describe the image .", 20, api_name="/inspect")
    with pytest.raises(Exception, match=needle):
        client.predict(*args, api_name=api)
    assert client.predict(0, 1, api_name="/show_token")


def test_inspect_needs_an_image(client):
    with pytest.raises(Exception, match="need an image"):
        client.predict(None, "how many objects are there ?", 5, api_name="/inspect")


def mitigate(client, path, methods, alpha=1.0, beta=0.1, noise=500, layer=2, keep=0.17, prune="mask"):
    return client.predict(handle_file(str(path)), "describe the image .", 30, methods, alpha, beta, noise,
                          layer, keep, prune, api_name="/mitigate")


def test_anchors_decode_in_mitigate_beside_greedy(client):
    sample = next(s for s in load_samples() if s.scene.split == "cooccur")
    rows = mitigate(client, sample.path, ["greedy", "anchors"], alpha=0.0)  # strength 0: greedy's answer
    assert rows[4]["visible"] and not rows[1]["visible"]
    assert [c["token"] for c in rows[4]["value"]] == [c["token"] for c in rows[0]["value"]]


def test_mitigate_side_by_side_and_step_distributions(client):
    sample = next(s for s in load_samples() if s.scene.split == "cooccur")
    out = mitigate(client, sample.path, ["greedy", "vcd", "sid"])
    rows = out
    assert all(rows[i]["visible"] and rows[i]["value"] for i in range(3)), "greedy, vcd and sid answered"
    assert rows[3]["visible"] is False, "icd was not chosen: hidden"
    chips = {m: [c["token"] for c in rows[i]["value"]] for i, m in enumerate(("greedy", "vcd", "sid"))}
    labels = [c["class_or_confidence"] for c in rows[1]["value"]]
    assert ("diverges" in " ".join(filter(None, labels))) == (chips["vcd"] != chips["greedy"])
    figure, kept = client.predict("sid", 0, api_name="/show_step")
    assert figure and kept
    with pytest.raises(Exception, match="out of range"):
        client.predict("vcd", 500, api_name="/show_step")


def test_sid_dropping_its_tokens_shows_the_one_selection_at_every_step(client):
    sample = next(s for s in load_samples() if s.scene.split == "cooccur")
    rows = mitigate(client, sample.path, ["sid"], prune="drop")
    assert len(rows[2]["value"]) > 1
    last = len(rows[2]["value"]) - 1
    first_kept = client.predict("sid", 0, api_name="/show_step")[1]
    last_kept = client.predict("sid", last, api_name="/show_step")[1]
    assert first_kept["plot"] == last_kept["plot"].replace(f"step {last}", "step 0")
    with pytest.raises(Exception, match="not in the list of choices"):
        mitigate(client, sample.path, ["sid"], prune="cut")


@pytest.mark.parametrize("kwargs,needle", [  # the sliders' bounds answer first, naming the limit
    ({"alpha": -1.0}, "less than minimum value 0"), ({"beta": 2.0}, "greater than maximum value 1"),
    ({"keep": 0.0}, "less than minimum value 0.01"), ({"layer": 9}, "greater than maximum value 3"),
    ({"noise": 5000}, "greater than maximum value 999"),
])
def test_mitigate_bad_parameters_get_clear_messages(client, kwargs, needle):
    path = load_samples()[0].path
    with pytest.raises(Exception, match=needle):
        mitigate(client, path, ["greedy", "vcd", "sid"], **kwargs)
    assert mitigate(client, path, ["greedy"])[0]


def test_every_registered_probe_runs_from_the_app(client):
    from probes import REGISTRY
    path = load_samples()[0].path
    for name in REGISTRY:
        params = '{"answer_index": 1, "ig_steps": 4}' if name == "attribution" else "{}"
        shapes, result_file, *figures = client.predict(handle_file(str(path)), "describe the image .", 12, name,
                                                       params, api_name="/run_probe")
        assert shapes and all(isinstance(v, list) for v in shapes.values()), name
        assert json.loads(open(result_file).read())["probe"] == name
        assert len(figures) == 3 and figures[0], f"{name}: its first default figure is drawn"
    with pytest.raises(Exception, match="JSON object"):
        client.predict(handle_file(str(path)), "describe the image .", 12, "drift", "[1, 2]", api_name="/run_probe")


def test_the_model_box_opens_another_model_and_a_bad_one_leaves_the_old_serving(embedded, serve, tmp_path):
    from tiny_models import sample_image, save_tiny
    client = serve(build_app(embedded))
    sample = load_samples()[0]
    before = generate(client, sample.path, "describe the image .")
    with pytest.raises(Exception, match="no model folder|not a Hugging Face"):
        client.predict(str(tmp_path / "nothing"), False, api_name="/open_model")
    assert generate(client, sample.path, "describe the image .") == before, "the old model keeps serving"
    save_tiny("qwen2_vl", tmp_path / "qwen")
    opened = client.predict(str(tmp_path / "qwen"), False, api_name="/open_model")
    assert "qwen2_vl" in opened[0] and "Opened" in opened[1]
    photo = tmp_path / "photo.png"
    sample_image(48, 32).save(photo)
    highlighted, table, status = generate(client, photo, "what is this ?")
    assert len(table["data"]) >= 1 and "no ground truth" in status
    with pytest.raises(Exception, match="another model|this model needs|residual stream is|No concept"):
        client.predict(handle_file(str(photo)), "what is this ?", 3, 1, 5.0, "image", api_name="/clamp")
    with pytest.raises(Exception, match="not DEVICE=SIZE"):
        client.predict(str(tmp_path / "qwen"), False, "auto", "cpu=lots", api_name="/open_model")
    split = client.predict("embedded", False, "auto", "cpu=3MB", api_name="/open_model")  # layers on disk
    assert "llava" in split[0] and generate(client, sample.path, "describe the image .") == before
    opened = client.predict("embedded", False, api_name="/open_model")
    assert "llava" in opened[0]
    assert generate(client, sample.path, "describe the image .") == before


def test_the_embedded_model_says_when_an_image_is_not_a_world_scene(client, tmp_path):
    from tiny_models import sample_image
    photo = tmp_path / "photo.png"
    sample_image(120, 80).save(photo)
    _, note = client.predict(handle_file(str(photo)), api_name="/load_image")
    assert "not a scene of the world" in note
    world = tmp_path / "world.png"
    render(sample_scene(123, "neutral")).save(world)
    _, note = client.predict(handle_file(str(world)), api_name="/load_image")
    assert "not a scene" not in note, "a world scene outside the samples is still a world scene"
    _, _, status = generate(client, photo, "describe the image .")
    assert "not a scene of the world" in status
