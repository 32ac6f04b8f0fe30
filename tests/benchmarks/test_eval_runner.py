"""``eval pope`` / ``eval chair`` end to end: the world exported as COCO + POPE files scores exactly as
``world eval`` does, an interrupted run resumes to the same report, bad input is one clear line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from studio.benchmarks.runner import RunSettings, chair_items, items_digest, pope_items, run_benchmark
from studio.cli import main
from studio.decoding import Greedy, strategy_by_name
from studio.world.coco import export_world
from studio.world.evaluate import POPE_KINDS, evaluate_split
from studio.world.language import CAPTION_PROMPT

N_SCENES = 6


@pytest.fixture(scope="module")
def world_folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    export_world(out, ["cooccur"], N_SCENES, seed=1, progress=False)
    return out


def _settings(benchmark: str, items, tokens: int, batch: int = 8) -> RunSettings:
    return RunSettings(benchmark=benchmark, model="embedded", max_new_tokens=tokens, batch_size=batch,
                       data=items_digest(items))


def test_world_round_trip_equals_world_eval(embedded, world_folder, tmp_path):
    report, _ = evaluate_split(embedded.answer_batch, "cooccur", N_SCENES, seed=1, progress=False)
    files = sorted((world_folder / "pope").glob("*.json"))
    pope = pope_items(files, world_folder / "images")
    got = {r.group: r.interval.metrics for r in run_benchmark(embedded, {"greedy": Greedy()}, pope, tmp_path / "p",
                                                              _settings("pope", pope, 6), progress=False)}
    for kind in POPE_KINDS:
        expected = report.pope[kind]
        assert got[f"world_pope_{kind}"]["accuracy"] == pytest.approx(expected.accuracy, abs=1e-12)
        assert got[f"world_pope_{kind}"]["f1"] == pytest.approx(expected.f1, abs=1e-12)
        assert got[f"world_pope_{kind}"]["yes_ratio"] == pytest.approx(expected.yes_ratio, abs=1e-12)
    captions = chair_items(world_folder / "annotations", world_folder / "images", prompt=CAPTION_PROMPT)
    chair = run_benchmark(embedded, {"greedy": Greedy()}, captions, tmp_path / "c", _settings("chair", captions, 40, 32),
                          progress=False)[0].interval.metrics
    assert report.chair is not None and report.chair.n_mentions > 0
    assert (chair["chair_s"], chair["chair_i"], chair["recall"]) == pytest.approx(
        (report.chair.chair_s, report.chair.chair_i, report.chair.recall), abs=1e-12)


def test_interrupted_run_resumes_to_the_same_report(embedded, world_folder, tmp_path, monkeypatch):
    items = pope_items([world_folder / "pope" / "world_pope_adversarial.json"], world_folder / "images")
    methods = {"greedy": Greedy(), "vcd": strategy_by_name("vcd")}
    settings = _settings("pope", items, 6, batch=4)
    whole = run_benchmark(embedded, methods, items, tmp_path / "whole", settings, progress=False)

    calls = {"n": 0}
    real = type(embedded).answer_batch

    def stop_on_third_batch(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)
    monkeypatch.setattr(type(embedded), "answer_batch", stop_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(embedded, methods, items, tmp_path / "cut", settings, progress=False)
    assert not (tmp_path / "cut" / "report.json").exists()
    kept = (tmp_path / "cut" / "answers-greedy.jsonl").read_text().splitlines()
    assert len(kept) == 1 + 2 * 4  # the header and the two batches answered before the stop
    monkeypatch.setattr(type(embedded), "answer_batch", real)
    resumed = run_benchmark(embedded, methods, items, tmp_path / "cut", settings, progress=False)
    assert [(r.method, r.group, r.interval) for r in resumed] == [(r.method, r.group, r.interval) for r in whole]
    for name in methods:
        assert (tmp_path / "cut" / f"answers-{name}.jsonl").read_text() == \
            (tmp_path / "whole" / f"answers-{name}.jsonl").read_text()


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", ["missing image", "malformed line", "wrong kind", "empty folder"])
def test_bad_input_is_one_line_and_writes_no_report(case, world_folder, tmp_path, capsys):
    out = tmp_path / "out"
    images = str(world_folder / "images")
    if case == "missing image":
        line = {"question_id": 1, "image": "nowhere.png", "text": "is there a cross ?", "label": "yes"}
        argv = ["eval", "pope", "--questions", str(_write(tmp_path / "q.json", json.dumps(line) + "\n")),
                "--images", images]
        expected = "nowhere.png"
    elif case == "malformed line":
        argv = ["eval", "pope", "--questions", str(_write(tmp_path / "q.json", '{"question_id": 1, "image"\n')),
                "--images", images]
        expected = "q.json"
    elif case == "wrong kind":
        captions = (world_folder / "annotations" / "captions_world.json").read_text()
        _write(tmp_path / "ann" / "instances_x.json", captions)
        _write(tmp_path / "ann" / "captions_x.json", captions)
        argv = ["eval", "chair", "--annotations", str(tmp_path / "ann"), "--images", images]
        expected = "instances_x.json"
    else:
        (tmp_path / "ann").mkdir()
        argv = ["eval", "chair", "--annotations", str(tmp_path / "ann"), "--images", images]
        expected = str(tmp_path / "ann")
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0]
    assert not (out / "report.json").exists()
