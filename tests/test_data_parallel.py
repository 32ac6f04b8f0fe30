"""Data-parallel runs under a real 2-process ``torchrun`` (gloo on CPU): the merged report and answer
files equal a one-process run byte for byte; parts of a dead process are kept and finished on a
re-run; parts of another run or another process count are refused with one line, nothing merged."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from studio.world.coco import export_world

BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def studio(*argv: str, processes: int = 1) -> subprocess.CompletedProcess:
    """``vlm-studio argv`` as one process, or under ``torchrun`` with ``processes`` processes (one thread each)."""
    command = [str(BIN / "vlm-studio"), *argv]
    if processes > 1:
        command = [str(BIN / "torchrun"), "--nproc-per-node", str(processes), "--no-python", "--", *command]
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)


def records(folder: Path, pattern: str) -> dict[str, object]:
    """Every answer record in the part files matching ``pattern``, by call or item id."""
    out: dict[str, object] = {}
    for path in sorted(folder.glob(pattern)):
        out.update({r["id"]: r["answer"] for r in map(json.loads, path.read_text().splitlines()[1:])})
    return out


WORLD_EVAL = ("world", "eval", "--splits", "cooccur", "--n", "3", "--methods", "greedy,vcd", "--detectors")


def test_world_eval_on_two_processes_equals_one(tmp_path):
    one = studio(*WORLD_EVAL, "--json", str(tmp_path / "one.json"), "--parts", str(tmp_path / "one.parts"))
    two = studio(*WORLD_EVAL, "--json", str(tmp_path / "two.json"), processes=2)
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    assert (tmp_path / "one.json").read_bytes() == (tmp_path / "two.json").read_bytes()
    assert set(json.loads((tmp_path / "one.json").read_text())["detectors"]) == {"cooccur", "neutral"}
    parts = tmp_path / "two.json.parts"
    assert sorted(p.name for p in parts.iterdir()) == sorted(
        [f"world-eval-{m}.part-{r}-of-2.jsonl" for m in ("greedy", "vcd") for r in (0, 1)]
        + [f"detector-{s}.part-{r}-of-2.jsonl" for s in ("cooccur", "neutral") for r in (0, 1)])
    detector = [records(parts, f"detector-cooccur.part-{r}-of-2.jsonl") for r in (0, 1)]
    assert sorted(detector[0]) == ["0", "2"] and sorted(detector[1]) == ["1"]
    assert {**detector[0], **detector[1]} == records(tmp_path / "one.parts", "detector-cooccur.part-*")
    for method in ("greedy", "vcd"):
        single = records(tmp_path / "one.parts", f"world-eval-{method}.part-*")
        assert records(parts, f"world-eval-{method}.part-*") == single and len(single) > 3
        ranks = [set(records(parts, f"world-eval-{method}.part-{r}-of-2.jsonl")) for r in (0, 1)]
        assert ranks[0].isdisjoint(ranks[1]) and all(int(k) % 2 == r for r in (0, 1) for k in ranks[r])


@pytest.fixture(scope="module")
def pope_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("world")
    export_world(folder, ["neutral"], 4, progress=False)
    return folder


def pope(folder: Path, out: Path, processes: int = 1) -> subprocess.CompletedProcess:
    return studio("eval", "pope", "--questions", str(folder / "pope" / "world_pope_adversarial.json"), "--images",
                  str(folder / "images"), "--out", str(out), "--methods", "vcd", "--batch-size", "3",
                  processes=processes)


def test_eval_pope_on_two_processes_equals_one_and_resumes_a_dead_process(pope_folder, tmp_path):
    assert pope(pope_folder, tmp_path / "one").returncode == 0
    assert pope(pope_folder, tmp_path / "two", processes=2).returncode == 0
    for name in ("answers-greedy.jsonl", "answers-vcd.jsonl", "report.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    # a process died: its part lost its last answer, nothing was merged yet
    cut = tmp_path / "two" / "answers-vcd.part-1-of-2.jsonl"
    lines = cut.read_text().splitlines(keepends=True)
    cut.write_text("".join(lines[:-1]))
    for name in ("answers-greedy.jsonl", "answers-vcd.jsonl", "report.json"):
        (tmp_path / "two" / name).unlink()
    kept = records(tmp_path / "two", "answers-*.part-*")
    assert pope(pope_folder, tmp_path / "two", processes=2).returncode == 0
    for name in ("answers-greedy.jsonl", "answers-vcd.jsonl", "report.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    assert records(tmp_path / "two", "answers-*.part-*").items() >= kept.items()  # kept parts were not redone


def test_parts_of_another_run_or_process_count_are_refused(pope_folder, tmp_path):
    assert pope(pope_folder, tmp_path / "two", processes=2).returncode == 0
    shutil.copytree(tmp_path / "two", tmp_path / "mixed")
    for name in ("answers-greedy.jsonl", "answers-vcd.jsonl", "report.json"):
        (tmp_path / "mixed" / name).unlink()
    one = pope(pope_folder, tmp_path / "mixed")  # one process meets the parts of two
    assert one.returncode == 2 and one.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "parts of a run with 2 processes" in one.stderr and not (tmp_path / "mixed" / "report.json").exists()
    other = tmp_path / "mixed" / "answers-vcd.part-0-of-2.jsonl"
    header = json.loads(other.read_text().splitlines()[0])
    header["header"]["params"]["alpha"] = 0.5  # a part written by a run with other settings
    other.write_text(json.dumps(header, sort_keys=True) + "\n" + "".join(other.read_text().splitlines(True)[1:]))
    two = pope(pope_folder, tmp_path / "mixed", processes=2)
    assert two.returncode != 0 and "other settings" in two.stderr
    assert not (tmp_path / "mixed" / "report.json").exists()


COLLECT = """
import sys
from studio.concepts.activations import CollectConfig, collect
from studio.engine.session import ModelSession
from studio.sharding import Workers
workers = Workers.from_env()
workers.start()
collect(ModelSession.load(None, device="cpu"), CollectConfig(layer=2, n_scenes=7, batch=2, shard_rows=60), sys.argv[1],
        progress=False, workers=workers)
"""


def test_activation_collection_on_two_processes_writes_the_shards_of_one(tmp_path):
    script = tmp_path / "collect.py"
    script.write_text(COLLECT)
    runs = {}
    for processes in (1, 2):
        out = tmp_path / f"p{processes}"
        command = [sys.executable, str(script), str(out)]
        if processes > 1:
            command = [str(BIN / "torchrun"), "--nproc-per-node", "2", "--no-python", "--", *command]
        done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        runs[processes] = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    assert sorted(runs[1]) == sorted(runs[2]) and len([n for n in runs[1] if n.startswith("shard_")]) >= 2
    assert runs[1] == runs[2]  # shard contents and meta.json, byte for byte; the parts are gone


def test_steer_fit_on_two_processes_saves_the_fit_of_one(tmp_path):
    argv = ("steer", "fit", "--method", "mean", "--n", "6", "--report-n", "6", "--chair-scenes", "0",
            "--alphas", "0,1,2")
    for processes in (1, 2):
        done = studio(*argv, "--out", str(tmp_path / f"p{processes}"), processes=processes)
        assert done.returncode == 0, done.stderr[-2000:]
    files = sorted(p.name for p in (tmp_path / "p1").iterdir())
    assert files == ["preference.json", "preference.safetensors"]
    for name in files:
        assert (tmp_path / "p1" / name).read_bytes() == (tmp_path / "p2" / name).read_bytes(), name
    # a process that died part way: its part cut to two batches, the fit gone; the re-run answers
    # only the batches no part holds, and saves the same fit
    parts = {p.name: p.read_bytes() for p in (tmp_path / "p2.parts").iterdir()}
    assert sorted(parts) == ["steer-fit.part-0-of-2.jsonl", "steer-fit.part-1-of-2.jsonl"]
    cut = tmp_path / "p2.parts" / "steer-fit.part-1-of-2.jsonl"
    cut.write_bytes(b"".join(parts[cut.name].splitlines(keepends=True)[:3]))
    shutil.rmtree(tmp_path / "p2")
    done = studio(*argv, "--out", str(tmp_path / "p2"), processes=2)
    assert done.returncode == 0, done.stderr[-2000:]
    assert {p.name: p.read_bytes() for p in (tmp_path / "p2.parts").iterdir()} == parts
    for name in files:
        assert (tmp_path / "p1" / name).read_bytes() == (tmp_path / "p2" / name).read_bytes(), name
