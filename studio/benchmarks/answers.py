"""A resumable answer store: one JSON line per answered item, after a header of the run's settings.

A benchmark run appends each answer as soon as it has it, flushed and fsynced, so stopping
the run (Ctrl-C, a crash, a power cut) loses at most the answer being written. Rerunning
with the same ``--out`` and the same settings reads what is done and asks only the rest; a
last line cut short by an interruption is ignored and overwritten by the next answer. A log
written with other settings (another model, method or question file) is refused, since
mixing answers of two runs would score neither.

File layout::

    {"header": {...the run's settings...}}
    {"id": "<item id>", "answer": "<text>", ...anything else given}
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from studio.engine.errors import InputError


def _line(payload: Mapping[str, Any]) -> bytes:
    return (json.dumps(payload, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """The settings that differ, as ``key: old -> new`` (values shortened)."""
    keys = [key for key in dict.fromkeys([*old, *new]) if old.get(key) != new.get(key)]
    return "; ".join(f"{key}: {json.dumps(old.get(key))[:60]} -> {json.dumps(new.get(key))[:60]}" for key in keys)


class AnswerLog:
    """The JSONL answers of one run at ``path``, whose settings are ``header``.

    Opening creates the file (and its folder) with the header, or checks an existing file's
    header against ``header`` (InputError if it differs) and reads its complete lines.
    """

    def __init__(self, path: str | Path, header: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.header: dict[str, Any] = json.loads(json.dumps(header))  # as it reads back from JSON
        self._records: dict[str, dict[str, Any]] = {}
        self._end = 0  # bytes of the file that are whole lines
        if self.path.exists() and not self.path.is_file():
            raise InputError(f"{self.path} is not a file; give --out a file name")
        header_line = _line({"header": self.header})
        data = self.path.read_bytes() if self.path.exists() else b""
        if header_line.startswith(data):  # new, empty, or this header's line was cut short
            self._write(header_line, at=0)
            return
        if b"\n" not in data:
            raise InputError(f"{self.path} is not an answer log of these settings; use another --out or delete it")
        lines = data.split(b"\n")[:-1]  # what follows the last newline is a cut-short line (or nothing)
        self._check_header(lines[0])
        for number, line in enumerate(lines[1:], start=2):
            record = self._parse(line, number)
            self._records[record["id"]] = record
        self._end = sum(len(line) + 1 for line in lines)

    def _parse(self, line: bytes, number: int) -> dict[str, Any]:
        """The record of a whole line; InputError if it is not one."""
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            record = None
        if not isinstance(record, dict) or "id" not in record:
            raise InputError(f"{self.path} line {number} is not an answer record; use another --out or delete it")
        return record

    def _check_header(self, line: bytes) -> None:
        try:
            first = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            first = None
        if not isinstance(first, dict) or not isinstance(first.get("header"), dict):
            raise InputError(f"{self.path} is not an answer log (its first line is no header); use another --out or delete it")
        if first["header"] != self.header:
            raise InputError(f"{self.path} was written with other settings ({_differences(first['header'], self.header)}); "
                             "use another --out or delete it")

    def _write(self, payload: bytes, at: int) -> None:
        """Write ``payload`` at byte ``at``, dropping whatever followed, and make it durable."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "r+b" if self.path.exists() else "wb") as f:
            f.seek(at)
            f.truncate()
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        self._end = at + len(payload)

    def done(self) -> dict[str, dict[str, Any]]:
        """The records written so far, by item id (each holds ``id``, ``answer`` and the rest)."""
        return dict(self._records)

    def append(self, item_id: str, record: Mapping[str, Any]) -> None:
        """Write one item's record (it must hold ``answer``) as a line, flushed and fsynced."""
        self.extend({item_id: record})

    def extend(self, records: Mapping[str, Mapping[str, Any]]) -> None:
        """Write several items' records (answered together, e.g. one batch), one line each, with
        one flush and fsync: a stop loses at most these lines, and the cut line is dropped on
        reading."""
        if any("answer" not in record for record in records.values()):
            raise ValueError("an answer record must hold 'answer'")
        full = {item_id: json.loads(json.dumps({**record, "id": item_id})) for item_id, record in records.items()}
        self._write(b"".join(_line(record) for record in full.values()), at=self._end)
        self._records.update(full)
