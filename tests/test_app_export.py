"""The app's exports, names and cancellation, through gradio_client: each tab's last run
downloads as a notebook bundle holding what the tab showed; every event has a public name; a
cancelled run stops between steps and leaves the session serving correct answers."""
import json
import threading
import time
import zipfile

import pytest
from gradio_client import handle_file

from studio.engine.hooks import hook_count
from studio.ui.app import build_app
from studio.world.samples import load_samples

PROMPT = "describe the image ."


@pytest.fixture(scope="module")
def app(embedded):
    return build_app(embedded)


@pytest.fixture(scope="module")
def client(app, serve):
    return serve(app)


def _unzip(path, tmp_path):
    with zipfile.ZipFile(path) as archive:
        archive.extractall(tmp_path)
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    return folder, json.loads((folder / "request.json").read_text())


def test_every_event_has_its_own_public_name(app):
    names = [fn.api_name for fn in app.fns.values() if fn.api_visibility != "private"]
    assert len(names) == len(set(names)), "names are unique"
    assert all(n and not n.startswith(("unnamed", "lambda", "fn")) for n in names), names
    assert {"generate", "inspect", "mitigate", "steer", "clamp", "export_generate", "export_inspect",
            "export_mitigate", "export_concepts", "export_steer"} <= set(names)


def test_export_before_any_run_is_a_clear_message(client):
    with pytest.raises(Exception, match="no mitigate run to export yet"):
        client.predict(api_name="/export_mitigate")


def test_generate_and_mitigate_exports_hold_what_the_tabs_showed(client, tmp_path):
    from studio.sharing.export import CELLS
    sample = next(s for s in load_samples() if s.scene.split == "cooccur")
    highlighted, _, _ = client.predict(handle_file(str(sample.path)), PROMPT, 30, api_name="/generate")
    folder, request = _unzip(client.predict(api_name="/export_generate"), tmp_path / "g")
    assert request["runs"] == [{"probe": "decode", "params": {"method": "greedy", "settings": {}}}]
    import vlm_studio as vs
    greedy = vs.load_result(folder / request["results"][0])
    assert greedy.text == "".join(c["token"] for c in highlighted).strip()
    assert (folder / "figures.html").stat().st_size > 1e6 and (folder / "image.png").is_file()
    assert len(json.loads((folder / "notebook.ipynb").read_text())["cells"]) == len(CELLS)

    rows = client.predict(handle_file(str(sample.path)), PROMPT, 30, ["greedy", "vcd"], 1.0, 0.1, 500, 2, 0.17,
                          api_name="/mitigate")
    folder, request = _unzip(client.predict(api_name="/export_mitigate"), tmp_path / "m")
    assert [r["params"]["method"] for r in request["runs"]] == ["greedy", "vcd"]
    assert request["runs"][1]["params"]["settings"] == {"alpha": 1.0, "beta": 0.1, "noise_step": 500}
    vcd = vs.load_result(folder / request["results"][1])
    assert vcd.text == "".join(c["token"] for c in rows[1]["value"]).strip()


def test_inspect_export_carries_its_results_and_attributions(client, tmp_path):
    sample = load_samples()[2]
    client.predict(handle_file(str(sample.path)), PROMPT, 12, api_name="/inspect")
    import vlm_studio as vs
    *_, relevancy = client.predict(1, api_name="/attribute")
    assert relevancy, "the selected token's relevancy map is drawn beside captum's"
    folder, request = _unzip(client.predict(api_name="/export_inspect"), tmp_path)
    assert [r["probe"] for r in request["runs"]] == ["logit_lens", "attention", "detector", "drift", "attribution",
                                                     "relevancy"]
    assert request["runs"][4]["params"]["answer_index"] == 1
    assert request["runs"][5]["params"]["answer_indices"] == [1]
    assert vs.load_result(folder / request["results"][5]).answer_indices == [1]
    html = (folder / "figures.html").read_text()
    assert "04 attribution: occlusion" in html and "00 logit_lens: heatmap" in html and "05 relevancy" in html


def _spy_on_cancels(monkeypatch) -> threading.Event:
    """An event set once the server has cancelled a task (gradio's /cancel route has run task.cancel())."""
    import asyncio

    import gradio.routes
    cancelled, original = threading.Event(), gradio.routes.cancel_tasks

    async def spy(task_ids):
        running = asyncio.ensure_future(original(task_ids))
        await asyncio.sleep(0)  # the original has now called task.cancel() and waits for the task to end
        cancelled.set()
        return await running
    monkeypatch.setattr(gradio.routes, "cancel_tasks", spy)
    return cancelled


def test_a_cancelled_mitigation_stops_between_methods_and_the_session_keeps_serving(client, embedded, monkeypatch):
    sample = next(s for s in load_samples() if s.scene.split == "cooccur")
    args = (handle_file(str(sample.path)), PROMPT, 40, ["greedy", "vcd", "sid", "icd"], 1.0, 0.1, 500, 2, 0.17)
    reference = client.predict(*args, api_name="/mitigate")
    hooks = hook_count(embedded.model)
    cancelled = _spy_on_cancels(monkeypatch)
    calls, gate, second_done, original = [], threading.Event(), threading.Event(), embedded.generate

    def gated(*a, **k):  # hold the second method until the server has cancelled the run
        calls.append(k.get("strategy"))
        if len(calls) != 2:
            return original(*a, **k)
        gate.wait(60)
        try:
            return original(*a, **k)
        finally:
            second_done.set()

    embedded.generate = gated
    try:
        job = client.submit(*args, api_name="/mitigate")
        deadline = time.monotonic() + 60
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(calls) == 2, "the run reached its second method"
        canceller = threading.Thread(target=job.cancel)  # returns once the server's task has ended
        canceller.start()
        assert cancelled.wait(60), "the server received the cancel"
        gate.set()
        canceller.join(60)
        with pytest.raises(Exception):
            job.result(timeout=60)
        assert second_done.wait(60)
        time.sleep(2)  # room for a third method to start if cancelling did not stop the run (one takes ~0.1 s)
        assert len(calls) == 2, "no method ran after the cancel"
        assert embedded.lock.acquire(timeout=60), "the session lock is free again"
        embedded.lock.release()
    finally:
        del embedded.generate
    assert hook_count(embedded.model) == hooks
    assert client.predict(*args, api_name="/mitigate") == reference


def test_export_of_a_run_whose_image_is_gone_is_a_clear_message(embedded, tmp_path):
    import gradio as gr

    from studio.ui.common import ExportSpec, export_download
    spec = ExportSpec(str(tmp_path / "gone.png"), PROMPT, 8, [{"probe": "drift", "params": {}}])
    with pytest.raises(gr.Error, match="no longer exists"):
        export_download(embedded, "generate", spec)
