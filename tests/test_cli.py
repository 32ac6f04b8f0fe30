"""The CLI: a real answer on success; on bad input, exit code 2 and one readable line."""
import json

import pytest
from PIL import Image

from studio.cli import main
from studio.world.render import render
from studio.world.scenes import sample_scene


@pytest.fixture()
def scene_png(tmp_path):
    path = tmp_path / "scene.png"
    render(sample_scene(2, "neutral")).save(path)
    return path


def test_describe_prints_the_answer(scene_png, capsys):
    assert main(["describe", str(scene_png), "--prompt", "how many objects are there ?", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["answer"] and all(0 < t["prob"] <= 1 for t in out["tokens"])


@pytest.mark.parametrize("case", ["not-image", "tiny", "missing", "bad-model", "empty-prompt"])
def test_bad_input_exits_2_with_one_line(case, scene_png, tmp_path, capsys):
    args = ["describe", str(scene_png)]
    if case == "not-image":
        bad = tmp_path / "x.png"
        bad.write_text("hello")
        args = ["describe", str(bad)]
    elif case == "tiny":
        Image.new("RGB", (1, 1)).save(tmp_path / "t.png")
        args = ["describe", str(tmp_path / "t.png")]
    elif case == "missing":
        args = ["describe", str(tmp_path / "nope.png")]
    elif case == "bad-model":
        args += ["--model", "nobody/nothing-at-all"]
    elif case == "empty-prompt":
        args += ["--prompt", " "]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err


def test_world_sample_writes_images_and_ground_truth(tmp_path, capsys):
    assert main(["world", "sample", "--split", "cooccur", "--n", "3", "--out", str(tmp_path)]) == 0
    truth = json.loads((tmp_path / "ground_truth.json").read_text())
    assert len(truth) == 3 and all("cross" in t["caption"] for t in truth)
    assert Image.open(tmp_path / truth[0]["image"]).size == (64, 64)


@pytest.mark.parametrize("args", [["--methods", "greedy,nonsense"], ["--methods", "greedy,sid", "--set", "sid.bogus=1"],
                                  ["--methods", "greedy,sid", "--set", "sid.layer=99"],
                                  ["--methods", "greedy", "--set", "vcd.alpha=1"]])
def test_bad_method_settings_exit_2_with_one_line(args, capsys):
    assert main(["world", "eval", "--n", "1", "--splits", "neutral", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err


@pytest.mark.parametrize("args,needle", [(["concepts", "word", "zebra"], "vocabulary"),
                                         (["concepts", "word", "ring", "--acts", "/nonexistent"], "activation set"),
                                         (["steer", "fit", "--alphas", "1,x"], "numbers"),
                                         (["concepts", "train", "--layer", "9", "--scenes", "2"], "out of range")])
def test_representation_commands_fail_with_one_line(args, needle, capsys, tmp_path):
    assert main([*args, *(["--out", str(tmp_path / "o"), "--cache", str(tmp_path / "c")]
                        if args[:2] == ["concepts", "train"] else [])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "o").exists()


def test_a_long_job_shows_progress_and_ctrl_c_stops_it_cleanly(tmp_path):
    """``concepts train`` prints a tqdm bar; SIGINT mid-collection exits 130 with one line and
    leaves neither a dictionary nor an activation set that claims to be complete."""
    import os
    import signal
    import subprocess
    import sys
    import threading
    out, cache = tmp_path / "dictionary", tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-m", "studio.cli", "concepts", "train", "--scenes", "200000",
                             "--out", str(out), "--cache", str(cache)], stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seen, started = bytearray(), threading.Event()

    def read():
        while chunk := proc.stderr.read1(4096):
            seen.extend(chunk)
            if b"activations layer 1:" in seen and b"it/s" in seen:
                started.set()
    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert started.wait(120), seen.decode(errors="replace")[-500:]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(120) == 130
    finally:
        proc.kill()
        reader.join(10)
    last = seen.decode(errors="replace").replace("\r", "\n").strip().splitlines()[-1]
    assert last == "error: interrupted"
    assert not out.exists()
    assert not any(p.name == "meta.json" for p in cache.rglob("*")), "no activation set claims completeness"


def test_an_interrupt_swallowed_by_a_finalizer_is_raised_again():
    """Python drops a KeyboardInterrupt raised inside a finalizer; the command's guard raises it
    again a moment later, so Ctrl-C still ends the job (and the guard leaves no timer or handler)."""
    import os
    import signal
    import time

    from studio.cli.interrupts import REPEAT_SECONDS, repeated_interrupts
    handler, swallowed, start = signal.getsignal(signal.SIGINT), 0, time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with repeated_interrupts():
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(10)
            except KeyboardInterrupt:
                swallowed += 1  # as Python does when the interrupt lands in a __del__
            while time.monotonic() - start < 30:
                time.sleep(0.01)
    assert swallowed == 1 and time.monotonic() - start < REPEAT_SECONDS + 3
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGINT) is handler


def test_probe_prints_shapes_and_writes_the_result(scene_png, tmp_path, capsys):
    out = tmp_path / "full.json"
    assert main(["probe", "drift", str(scene_png), "--max-new-tokens", "4", "--json", str(out),
                 "--save", str(tmp_path / "drift")]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("drift: cos_blank [4], cos_removed [4]"), printed
    data = json.loads(out.read_text())
    assert data["probe"] == "drift" and data["arrays"]["cos_blank"]["shape"] == [4]
    import vlm_studio as vs
    saved = vs.load_result(tmp_path / "drift")
    assert saved.cos_blank.tolist() == pytest.approx(data["arrays"]["cos_blank"]["data"])


def test_launch_builds_the_app_and_serves_where_asked(monkeypatch):
    calls = {}

    class Stub:
        def queue(self):
            return self

        def launch(self, **kwargs):
            calls.update(kwargs)

    def build(session, concepts=None, steering=None, **options):
        calls.update(layers=session.n_layers, options=options)
        return Stub()
    monkeypatch.setattr("studio.ui.app.build_app", build)
    assert main(["launch", "--port", "7999", "--host", "0.0.0.0", "--device", "cpu"]) == 0
    assert calls == {"layers": 4, "options": {"device": "cpu", "dtype": "auto"}, "server_name": "0.0.0.0",
                     "server_port": 7999, "share": False, "inbrowser": False}, "the Model box reopens with these"


@pytest.mark.parametrize("args,needle", [
    (["launch", "--port", "70000"], "from 1 to 65535"),
    (["world", "eval", "--n", "-5"], "at least 1"),
    (["describe", "x.png", "--max-new-tokens", "0"], "from 1 to 512"),
    (["describe", "x.png", "--device", "tpu"], "unknown device"),
    (["describe", "x.png", "--device", "cuda"], "no CUDA GPU"),
    (["steer", "fit", "--steps", "0"], "at least 1"),
])
def test_numbers_and_devices_are_checked_where_they_enter(args, needle, capsys, scene_png):
    args = [str(scene_png) if a == "x.png" else a for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err


def test_trust_remote_code_reaches_the_loader_only_when_asked(scene_png, monkeypatch, capsys):
    seen = []

    def config(where, **kwargs):
        seen.append(kwargs["trust_remote_code"])
        raise OSError("stop here")
    monkeypatch.setattr("studio.engine.loading.AutoConfig.from_pretrained", config)
    for extra in ([], ["--trust-remote-code"]):
        assert main(["describe", str(scene_png), *extra]) == 2
        assert "stop here" in capsys.readouterr().err
    assert seen == [False, True]


def test_world_eval_reports_consistent_counts(tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["world", "eval", "--n", "3", "--splits", "neutral", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["n_scenes"] == 3 and set(report["splits"]) == {"neutral"}
    split = report["splits"]["neutral"]
    for kind, scores in split["pope"].items():
        assert 0 <= scores["accuracy"] <= 1 and 0 <= scores["yes_ratio"] <= 1, kind
        assert scores["n"] % 2 == 0 and scores["n"] >= 2, "POPE asks as many absent as present objects"
    assert "neutral" in capsys.readouterr().out
