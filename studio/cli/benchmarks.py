"""The benchmark commands: ``eval pope``, ``eval chair`` and ``world export``.

``eval`` answers a benchmark folder in the formats researchers already have (POPE's question
files, COCO's annotation files) with every decoding method asked for, resumably, and prints the
per-method figures with paired-bootstrap intervals of the differences to greedy. ``world
export`` writes the scene world in those formats, so the same commands run end to end here.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from studio.engine.errors import InputError


def _strategies(args) -> dict:
    """Greedy plus ``--methods``, each with its ``--set`` parameters (and the shared sampling flags)."""
    from studio.decoding import parse_settings, strategy_by_name
    names = ["greedy"] + [m for m in (args.methods or "").split(",") if m and m != "greedy"]
    settings = parse_settings(args.set)
    stray = sorted(set(settings) - set(names))
    if stray:
        raise InputError(f"--set names methods not in --methods: {', '.join(stray)}")
    return {name: strategy_by_name(name, **settings.get(name, {})) for name in names}


def _settings(args, session, benchmark: str, items):
    from studio.benchmarks.runner import RunSettings, items_digest
    return RunSettings(benchmark=benchmark, model=session.source, max_new_tokens=args.max_new_tokens,
                       batch_size=args.batch_size, data=items_digest(items))


def _run(args, session, benchmark: str, items, metrics) -> int:
    from studio.benchmarks.runner import format_reports, run_benchmark
    if not items:
        raise InputError("nothing to answer: the benchmark files hold no items")
    from studio.sharding import Workers
    workers = Workers.from_env()
    workers.start()
    methods = _strategies(args)
    out = Path(args.out)
    reports = run_benchmark(session, methods, items, out, _settings(args, session, benchmark, items), seed=args.seed,
                            workers=workers)
    if not workers.main:
        return 0
    print(format_reports(reports, metrics))
    print(f"wrote {out / 'report.json'} (answers: {out}/answers-<method>.jsonl)")
    return 0


def cmd_eval_pope(args, session) -> int:
    from studio.benchmarks.runner import POPE_METRICS, pope_items
    items = pope_items([Path(q) for q in args.questions], Path(args.images), suffix=args.suffix, limit=args.n)
    return _run(args, session, "pope", items, POPE_METRICS)


def cmd_eval_chair(args, session) -> int:
    from studio.benchmarks.runner import CHAIR_METRICS, chair_items
    items = chair_items(Path(args.annotations), Path(args.images), prompt=args.prompt, limit=args.n, seed=args.seed)
    return _run(args, session, "chair", items, CHAIR_METRICS)


def cmd_world_export(args) -> int:
    from studio.world.coco import export_world
    from studio.world.evaluate import EVAL_SPLITS
    splits = args.splits.split(",")
    unknown = [s for s in splits if s not in EVAL_SPLITS]
    if unknown:
        raise InputError(f"unknown split(s) {', '.join(unknown)}; choose from {', '.join(EVAL_SPLITS)}")
    done = export_world(Path(args.out), splits, args.n, seed=args.seed)
    print(f"wrote {len(done.images)} images, COCO annotations and POPE question files to {done.folder}")
    return 0


def _common(p: argparse.ArgumentParser, model_args: Callable, default_tokens: int) -> None:
    from studio.cli.commands import NEW_TOKENS, NON_NEGATIVE, POSITIVE
    model_args(p)
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for the answers (one JSONL per method, appended as they come) and report.json; "
                        "re-running with the same folder continues where it stopped")
    p.add_argument("--methods", help="decoding methods to compare with greedy, e.g. vcd,sid,icd")
    p.add_argument("--set", action="append", default=[], metavar="METHOD.PARAM=VALUE",
                   help="a method's parameter, e.g. --set vcd.alpha=0.5 (repeatable)")
    p.add_argument("--n", type=POSITIVE, help="answer only this many items (POPE: per file; CHAIR: images)")
    p.add_argument("--batch-size", type=POSITIVE, default=16, help="prompts decoded together (default 16)")
    p.add_argument("--max-new-tokens", type=NEW_TOKENS, default=default_tokens)
    p.add_argument("--seed", type=NON_NEGATIVE, default=0, help="bootstrap seed (and CHAIR's image sample)")


def add_commands(sub, world, model_args: Callable, with_session: Callable) -> None:
    """Register ``eval pope``, ``eval chair`` (under ``sub``) and ``world export`` (under ``world``)."""
    from studio.world.evaluate import EVAL_SPLITS
    evals = sub.add_parser("eval", help="benchmarks in their published formats: POPE, CHAIR").add_subparsers(
        dest="eval_command", required=True)
    p = evals.add_parser("pope", help="POPE accuracy, precision, recall, F1 and yes-ratio per question file")
    p.add_argument("--questions", nargs="+", required=True, metavar="FILE",
                   help="POPE question files (one JSON object a line: question_id, image, text, label)")
    p.add_argument("--images", required=True, metavar="DIR", help="the folder holding the images the questions name")
    p.add_argument("--suffix", default="", help="text appended to every question (some harnesses add an instruction)")
    _common(p, model_args, 8)
    p.set_defaults(func=with_session(cmd_eval_pope))
    p = evals.add_parser("chair", help="caption images and score CHAIR_s, CHAIR_i and recall (Rohrbach et al.)")
    p.add_argument("--annotations", required=True, metavar="DIR",
                   help="COCO annotations: a folder with instances_*.json and captions_*.json")
    p.add_argument("--images", required=True, metavar="DIR")
    from studio.benchmarks.runner import CHAIR_PROMPT
    p.add_argument("--prompt", default=CHAIR_PROMPT, help=f"the captioning prompt (default {CHAIR_PROMPT!r})")
    _common(p, model_args, 64)
    p.set_defaults(func=with_session(cmd_eval_chair))
    p = world.add_parser("export", help="write world scenes as a COCO-format folder with POPE question files")
    p.add_argument("out", help="folder to write (absent, empty, or an earlier export with the same settings)")
    p.add_argument("--splits", default="neutral,cooccur,colour_prior", help=f"from {', '.join(EVAL_SPLITS)}")
    from studio.cli.commands import NON_NEGATIVE, POSITIVE
    p.add_argument("--n", type=POSITIVE, default=300, help="scenes per split")
    p.add_argument("--seed", type=NON_NEGATIVE, default=0)
    p.set_defaults(func=cmd_world_export)
