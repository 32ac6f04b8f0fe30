"""`python -m bench.realsize --quick` on the two smallest shapes: a smoke test that every shape builds
offline from its JSON and every step of the studio runs on it. It checks the printed tables hold
every row with a finite positive ratio, and the saved JSON the same; never how long anything took."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.realsize import ROWS

ROOT = Path(__file__).resolve().parent.parent
SHAPES = ("smolvlm-256m", "qwen2-vl-2b")
RATIO = re.compile(r"(?:est\. )?(?P<ratio>[0-9][0-9.,]*) x (?:forward|greedy|model\.generate|1 row|fresh)\b")


def tables(stdout: str) -> dict[str, dict[str, str]]:
    """Each shape's table as {row label: the rest of its line}, from the printed output."""
    out: dict[str, dict[str, str]] = {}
    current = None
    for line in stdout.splitlines():
        heading = re.match(r"== (\S+) \(quick\):", line)
        if heading:
            current = out.setdefault(heading.group(1), {})
        elif current is not None:
            label = line[3:43].rstrip()
            if label in ROWS:
                current[label] = line[43:]
    return out


def test_quick_run_prints_every_row_with_finite_positive_ratios(tmp_path):
    saved = tmp_path / "realsize.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "bench.realsize", "--quick", "--shapes", ",".join(SHAPES),
                           "--json", str(saved)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.startswith("machine: "), proc.stdout[:500]
    printed = tables(proc.stdout)
    assert sorted(printed) == sorted(SHAPES), proc.stdout
    for shape, rows in printed.items():
        assert set(rows) == set(ROWS), f"{shape}: missing {sorted(set(ROWS) - set(rows))}"
        for label, rest in rows.items():
            match = RATIO.search(rest)
            assert match, f"{shape} / {label}: no ratio in {rest!r}"
            ratio = float(match.group("ratio").replace(",", ""))
            assert math.isfinite(ratio) and ratio > 0, f"{shape} / {label}: ratio {ratio}"
    data = json.loads(saved.read_text())
    assert data["quick"] is True and sorted(data["shapes"]) == sorted(SHAPES)
    for shape, report in data["shapes"].items():
        assert [row["label"] for row in report["rows"]] == list(ROWS), shape
        for row in report["rows"]:
            assert math.isfinite(row["ratio"]) and row["ratio"] > 0, (shape, row)
            assert math.isfinite(row["value"]) and row["value"] > 0, (shape, row)
        assert report["decoder_layers"][0] == 2 and report["vision_layers"][0] == 2, shape


def test_decoding_calls_alternate_so_a_drift_falls_on_each_alike():
    from bench.realsize import Timer
    calls: list[str] = []
    costs = Timer(repeats=4, budget=1e9).measure_each({name: (lambda n=name: calls.append(n)) for name in "abc"})
    assert calls == list("abccbaabccba")
    assert [costs[name].samples for name in "abc"] == [4, 4, 4]


def test_the_shorter_runs_keep_quick_mode(monkeypatch):
    """``--decoding-only`` and ``--attribution-only`` build the 2-layer models under ``--quick``."""
    import bench.realsize as realsize
    built: list[bool] = []

    class Built(Exception):
        pass

    def stop(shape, quick):
        built.append(quick)
        raise Built
    monkeypatch.setattr(realsize, "build", stop)
    for mode in (["--decoding-only", "4"], ["--attribution-only"]):
        with pytest.raises(Built):
            realsize.main([*mode, "--quick", "--shapes", "smolvlm-256m"])
    assert built == [True, True]


def test_the_step_clock_splits_a_call_into_prompt_pass_steps_gaps_and_tail(monkeypatch):
    """A call of three forwards read from a fake clock: the prompt pass runs to the first
    forward's end, a step from one end to the next, a gap from one end to the next start, and
    the tail after the last forward is shared over the call's two steps."""
    import torch

    import bench.realsize as realsize
    ticks = iter([0.0,            # the call starts
                  1.0, 4.0,       # forward 1: start, end (the prompt pass)
                  4.5, 6.0,       # forward 2: 0.5 s after the first's end, ends 2 s after it
                  6.25, 9.0,      # forward 3: 0.25 s after, ends 3 s after the second's end
                  11.0])          # the call returns 2 s after the last forward
    monkeypatch.setattr(realsize.time, "perf_counter", lambda: next(ticks))
    model = torch.nn.Identity()
    clock = realsize.StepClock(model)
    clock.time(lambda: [model(torch.zeros(1)) for _ in range(3)])()
    assert clock.prompts == [4.0]
    assert clock.steps == [2.0, 3.0]
    assert clock.gaps == [0.5, 0.25]
    assert clock.tails == [1.0]
    assert not model._forward_hooks and not model._forward_pre_hooks
