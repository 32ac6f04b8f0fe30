"""Throughput of ``eval pope``: answers per second with batched prompts against one prompt at a time,
measured side by side in one run on the same questions (the world exported as POPE files).

    python -m bench.eval [--model embedded] [--scenes 20] [--batch-size 16] [--methods greedy,vcd]

Each method answers every question twice through the same code ``eval pope`` runs
(:func:`studio.benchmarks.runner.answer_items`, into throwaway answer logs): once with
``--batch-size`` prompts per call, once with one; it prints answers/s of both and their ratio,
and whether the two runs gave the same answers (left padding may flip a near tie).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from studio.benchmarks.answers import AnswerLog
from studio.benchmarks.runner import RunSettings, answer_items, items_digest, pope_items
from studio.decoding import strategy_by_name
from studio.engine.session import ModelSession
from studio.world.coco import export_world


def timed_answers(session, name: str, items, batch_size: int, folder: Path) -> tuple[float, dict[str, str]]:
    """Seconds to answer ``items`` with ``name`` in batches of ``batch_size``, and the answers."""
    settings = RunSettings("pope", session.source, 6, batch_size, items_digest(items))
    log = AnswerLog(folder / f"{name}-{batch_size}.jsonl", {"batch": batch_size})
    start = time.perf_counter()
    answers = answer_items(session, name, strategy_by_name(name), items, log, settings, progress=False)
    return time.perf_counter() - start, answers


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--scenes", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--methods", default="greedy,vcd")
    args = parser.parse_args(argv)
    session = ModelSession.load(None if args.model == "embedded" else args.model, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        export_world(folder / "world", ["cooccur"], args.scenes, progress=False)
        items = pope_items(sorted((folder / "world" / "pope").glob("*.json")), folder / "world" / "images")
        print(f"{len(items)} POPE questions on {args.scenes} world scenes, model {session.source}")
        print(f"{'method':<8}{'one at a time':>16}{f'batch {args.batch_size}':>14}{'ratio':>8}  same answers")
        for name in args.methods.split(","):
            single, one = timed_answers(session, name, items, 1, folder)
            batched, many = timed_answers(session, name, items, args.batch_size, folder)
            same = sum(one[k] == many[k] for k in one)
            print(f"{name:<8}{len(items) / single:>12.1f} a/s{len(items) / batched:>10.1f} a/s"
                  f"{single / batched:>7.1f}x  {same}/{len(items)}")


if __name__ == "__main__":
    main()
