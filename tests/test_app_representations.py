"""The Concepts and Steer tabs through gradio_client, including two concurrent steering
requests with different alpha that must each get their own answer."""
from concurrent.futures import ThreadPoolExecutor

import pytest
from gradio_client import handle_file

from studio.engine.hooks import hook_count
from studio.ui.app import build_app
from studio.ui.steer_tab import load_fit
from studio.world.render import render
from studio.world.scenes import sample_scene


@pytest.fixture(scope="module")
def client(embedded, serve):
    return serve(build_app(embedded), concurrency=8)


@pytest.fixture(scope="module")
def conflict_png(tmp_path_factory):
    scene = sample_scene(11, "neutral")
    path = tmp_path_factory.mktemp("img") / "scene.png"
    render(scene).save(path)
    obj = scene.objects[0]
    other = "red" if obj.colour != "red" else "blue"
    return path, f"the {obj.kind} is {other} . what color is the {obj.kind} ?"


def test_concepts_feature_grounding_and_clamp(client, conflict_png):
    path, _ = conflict_png
    table = client.predict(handle_file(str(path)), "describe the image .", api_name="/image_features")
    feature = table["data"][0][0]
    crops, words, heat, the_map = client.predict(handle_file(str(path)), "describe the image .", feature,
                                                 api_name="/show_feature")
    assert crops and words and heat and the_map
    plain, clamped = client.predict(handle_file(str(path)), "describe the image .", 20, feature, 0.0, "image",
                                    api_name="/clamp")
    assert plain
    with pytest.raises(Exception, match="does not exist"):
        client.predict(handle_file(str(path)), "describe the image .", 10**6, api_name="/show_feature")


def test_concurrent_steering_requests_each_get_their_own_answer(client, embedded, conflict_png):
    path, prompt = conflict_png
    fit, problem = load_fit(embedded, None)
    assert fit is not None, problem
    layers = ",".join(str(x) for x in fit.extra["layers"])
    alphas = [-1.0, 0.0, 1.0, 2.0]
    prepared = embedded.prepare(path, prompt)
    edits = {a: fit.steering(fit.extra["layers"], a).interventions() for a in alphas}
    alone = {a: embedded.decode_answer([t.id for t in embedded.generate(prepared, 8, interventions=edits[a]).tokens])
             for a in alphas}
    before = hook_count(embedded.model)
    with ThreadPoolExecutor(len(alphas)) as pool:
        results = list(pool.map(lambda a: client.predict(handle_file(str(path)), prompt, 8, a, layers,
                                                         api_name="/steer"), alphas))
    for alpha, (plain, steered, curve) in zip(alphas, results):
        assert steered == alone[alpha], alpha
        assert plain == alone[0.0] and curve
    assert hook_count(embedded.model) == before


@pytest.mark.parametrize("alpha,layers,needle", [(1.0, "9", "within"), (1.0, "a,b", "integers"),
                                                 (100.0, "1", "maximum")])
def test_bad_steering_input_gets_a_clear_message(client, conflict_png, alpha, layers, needle):
    path, prompt = conflict_png
    with pytest.raises(Exception, match=needle):
        client.predict(handle_file(str(path)), prompt, 8, alpha, layers, api_name="/steer")


def test_eight_concurrent_clients_with_different_settings_match_their_solo_runs(client, embedded, conflict_png):
    path, prompt = conflict_png
    image = handle_file(str(path))
    requests = [("/steer", (image, prompt, 6, alpha, "1")) for alpha in (-1.0, 0.0, 1.0, 2.0)] + [
        ("/mitigate", (image, "describe the image .", 16, [method], alpha, 0.1, 500, 2, 0.17))
        for method, alpha in (("vcd", 1.0), ("vcd", 3.0), ("sid", 1.0), ("icd", 2.0))]
    alone = [client.predict(*args, api_name=api) for api, args in requests]
    before = hook_count(embedded.model)
    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(lambda r: client.predict(*r[1], api_name=r[0]), requests))
    for (api, args), solo, concurrent in zip(requests, alone, together):
        if api == "/steer":
            assert concurrent[:2] == solo[:2] and solo[1], args[3]
        else:
            assert concurrent == solo and any(row.get("value") for row in solo), args[3:5]
    assert hook_count(embedded.model) == before


def _unzip(path, folder):
    import json
    import zipfile
    with zipfile.ZipFile(path) as archive:
        archive.extractall(folder)
    (inner,) = [p for p in folder.iterdir() if p.is_dir()]
    return inner, json.loads((inner / "request.json").read_text())


def test_concepts_and_steer_exports_hold_the_run_the_tab_showed(client, conflict_png, tmp_path):
    import vlm_studio as vs
    path, prompt = conflict_png
    plain, clamped = client.predict(handle_file(str(path)), "describe the image .", 12, 7, 30.0, "image",
                                    api_name="/clamp")
    folder, request = _unzip(client.predict(api_name="/export_concepts"), tmp_path / "c")
    assert request["runs"] == [{"probe": "clamp", "params": {"feature": 7, "value": 30.0, "where": "image",
                                                             "dictionary": ""}}]
    result = vs.load_result(folder / request["results"][0])
    assert (result.baseline_text, result.text) == (plain, clamped)
    plain, steered, _ = client.predict(handle_file(str(path)), prompt, 8, 1.0, "1", api_name="/steer")
    folder, request = _unzip(client.predict(api_name="/export_steer"), tmp_path / "s")
    assert request["runs"] == [{"probe": "steer", "params": {"alpha": 1.0, "layers": [1], "directions": ""}}]
    result = vs.load_result(folder / request["results"][0])
    assert (result.baseline_text, result.text) == (plain, steered)
