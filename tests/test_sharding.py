"""``map_items`` without a launcher: items computed in key order, a run stopped part way keeps what it
wrote and a re-run computes only the rest, and a part of another run is refused before any work."""
from __future__ import annotations

import pytest

from studio.engine.errors import InputError
from studio.sharding import Workers, kept_batches, map_items, part_path


class Stop(Exception):
    pass


def test_a_stopped_run_resumes_with_only_the_missing_items(tmp_path):
    calls: list[str] = []

    def compute(key: str, stop_at: str | None = None) -> list[int]:
        if key == stop_at:
            raise Stop
        calls.append(key)
        return [int(key), int(key) ** 2]

    keys = [str(k) for k in range(5)]
    with pytest.raises(Stop):
        map_items(keys, lambda key: compute(key, stop_at="3"), tmp_path, "t", {"seed": 1}, Workers(), progress=False)
    assert calls == ["0", "1", "2"]
    merged = map_items(keys, compute, tmp_path, "t", {"seed": 1}, Workers(), progress=False)
    assert calls == ["0", "1", "2", "3", "4"]
    assert merged == [[k, k * k] for k in range(5)]
    assert map_items(keys, compute, None, "t", {}, Workers(), progress=False) == merged


def test_parts_of_other_settings_or_process_counts_are_refused(tmp_path):
    keys = ["0", "1"]
    map_items(keys, lambda key: key, tmp_path, "t", {"seed": 1}, Workers(), progress=False)
    with pytest.raises(InputError, match="other settings"):
        map_items(keys, lambda key: key, tmp_path, "t", {"seed": 2}, Workers(), progress=False)
    part_path(tmp_path, "u", Workers(0, 3)).write_text("")
    with pytest.raises(InputError, match="3 processes"):
        map_items(keys, lambda key: key, tmp_path, "u", {"seed": 1}, Workers(), progress=False)


def test_kept_batches_number_the_calls_of_a_job_and_resume_it(tmp_path):
    asked: list[list[int]] = []

    def job(stop_in_second_call: bool = False) -> list[list[int]]:
        def double(batch: list[int]) -> list[int]:
            if stop_in_second_call and batch[0] >= 10:
                raise Stop
            asked.append(batch)
            return [2 * x for x in batch]
        with kept_batches(tmp_path, "job", {"n": 2}, Workers()):
            first = Workers().map_batches([[1, 2], [3]], double)
            second = Workers().map_batches([[x + 10 for x in first]], double)
        return [first, second]

    with pytest.raises(Stop):
        job(stop_in_second_call=True)
    assert asked == [[1, 2], [3]]
    assert job() == [[2, 4, 6], [24, 28, 32]]
    assert asked == [[1, 2], [3], [12, 14, 16]]  # the first call's batches were read back, not asked again
    assert Workers().map_batches([[1]], lambda batch: [0]) == [0]  # outside the context nothing is kept
