"""The resumable answer log: durable appends, resuming after a cut-short write, refusing other settings."""
from __future__ import annotations

import json

import pytest

from studio.benchmarks.answers import AnswerLog
from studio.engine.errors import InputError

HEADER = {"model": "tiny", "method": "greedy", "params": {"max_new_tokens": 8}, "questions": {"random.json": "ab12"}}
ITEMS = [(f"random:{i}", {"answer": f"answer {i}", "question": f"q{i}"}) for i in range(5)]


def run(path, items, header=HEADER):
    """Answer every item not yet done, as a benchmark run does; return what was asked."""
    log = AnswerLog(path, header)
    done = log.done()
    asked = [item_id for item_id, _ in items if item_id not in done]
    for item_id, record in items:
        if item_id not in done:
            log.append(item_id, record)
    return asked


def test_writes_header_then_one_line_per_answer(tmp_path):
    path = tmp_path / "out" / "answers.jsonl"
    run(path, ITEMS[:2])
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [{"header": HEADER}, {"id": "random:0", "answer": "answer 0", "question": "q0"},
                     {"id": "random:1", "answer": "answer 1", "question": "q1"}]
    assert AnswerLog(path, HEADER).done() == {item_id: {"id": item_id, **record} for item_id, record in ITEMS[:2]}


def test_resume_after_cut_short_write_equals_uninterrupted_run(tmp_path):
    whole = tmp_path / "whole.jsonl"
    run(whole, ITEMS)
    cut = tmp_path / "cut.jsonl"
    run(cut, ITEMS[:4])
    with open(cut, "ab") as f:  # the run stopped while writing the last answer, a long one (sampled)
        f.write(b'{"answer": "' + b"a long answer, longer than the one the resumed run will write " * 3)
    assert set(AnswerLog(cut, HEADER).done()) == {item_id for item_id, _ in ITEMS[:4]}
    assert run(cut, ITEMS) == ["random:4"]  # the cut answer is asked again
    assert cut.read_bytes() == whole.read_bytes()
    assert AnswerLog(cut, HEADER).done() == AnswerLog(whole, HEADER).done()


def test_cut_short_header_is_rewritten(tmp_path):
    path = tmp_path / "answers.jsonl"
    AnswerLog(path, HEADER)
    path.write_bytes(path.read_bytes()[:7])
    assert run(path, ITEMS[:1]) == ["random:0"]
    assert path.read_text().splitlines()[0] == json.dumps({"header": HEADER}, sort_keys=True)


def test_other_settings_are_refused(tmp_path):
    path = tmp_path / "answers.jsonl"
    run(path, ITEMS[:2])
    before = path.read_bytes()
    with pytest.raises(InputError) as err:
        AnswerLog(path, {**HEADER, "model": "other"})
    assert str(err.value) == (f'{path} was written with other settings (model: "tiny" -> "other"); '
                              "use another --out or delete it")
    assert path.read_bytes() == before


def test_a_file_that_is_no_log_is_left_alone(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("my notes\nmore notes\n")
    with pytest.raises(InputError, match="is not an answer log"):
        AnswerLog(path, HEADER)
    assert path.read_text() == "my notes\nmore notes\n"


def test_append_needs_an_answer(tmp_path):
    log = AnswerLog(tmp_path / "a.jsonl", HEADER)
    with pytest.raises(ValueError, match="answer"):
        log.append("x", {"text": "no answer key"})
