"""vlm-studio: the studio, probes, POPE / CHAIR benchmarks, the scene world, concept dictionaries and steering.

Launch the studio, describe an image, run a probe, evaluate decoding methods on POPE and CHAIR
files, train / evaluate / sample / export the world, train concept dictionaries, fit and sweep
modality-preference steering.

Every user-facing failure ends the command with exit code 2 and one line ``error: ...``.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import NoReturn

from studio.cli.interrupts import repeated_interrupts
from studio.engine.errors import InputError, StudioError
from studio.engine.files import atomic_write_json


class Parser(argparse.ArgumentParser):
    """argparse with the studio's error convention: one ``error: ...`` line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {message}", file=sys.stderr)
        sys.exit(2)


def whole(low: int, high: int | None = None):
    """An argparse type: a whole number from ``low`` (to ``high``), refused where it enters."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            span = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {span}; got {value}")
        return value
    parse.__name__ = "whole number"
    return parse


POSITIVE, NON_NEGATIVE = whole(1), whole(0)
NEW_TOKENS = whole(1, 512)
MODEL_HELP = "model: 'embedded' (default), a local folder with safetensors weights, or a Hugging Face id"


def _model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="embedded", help=MODEL_HELP)
    parser.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cuda, mps or cpu")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"],
                        help="weights dtype; auto = bf16/fp16 on GPU, fp32 on CPU")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow the model folder's own Python code to run (off by default)")
    parser.add_argument("--device-map", metavar="auto|balanced|FILE",
                        help="split the model over the GPUs, CPU and disk with accelerate: a strategy (auto, balanced, "
                             "balanced_low_0, sequential) or a JSON file mapping module names to devices")
    parser.add_argument("--max-memory", metavar="DEV=SIZE,...",
                        help="memory budget per device for --device-map, e.g. 0=20GiB,1=20GiB,cpu=64GiB; what does "
                             "not fit is offloaded to disk (implies --device-map auto)")


def _session(args):
    from studio.engine.session import ModelSession
    return ModelSession.load(args.model, device=args.device, dtype=args.dtype,
                             trust_remote_code=args.trust_remote_code, device_map=args.device_map,
                             max_memory=args.max_memory)


def cmd_launch(args) -> int:
    from studio.ui.app import build_app
    app = build_app(_session(args), concepts=args.concepts, steering=args.steering, device=args.device,
                    dtype=args.dtype)
    app.queue().launch(server_name=args.host, server_port=args.port, share=False, inbrowser=False)
    return 0


def cmd_describe(args) -> int:
    from studio.engine.images import load_image
    from studio.engine.session import check_prompt
    load_image(args.image)
    check_prompt(args.prompt)
    session = _session(args)
    prepared = session.prepare(args.image, args.prompt)
    generation = session.generate(prepared, max_new_tokens=args.max_new_tokens)
    if args.json:
        print(json.dumps({"answer": generation.text, "tokens": [
            {"text": t.text, "prob": t.prob, "expert_prob": t.expert_prob, "top": t.top} for t in generation.tokens]}, indent=1))
    else:
        print(generation.text)
    return 0


def cmd_probe(args) -> int:
    from probes import ProbeRequest, get_probe
    probe = get_probe(args.name)
    params = probe.params(**dict(_parse_param(p) for p in args.param))
    session = _session(args)
    result = probe.run(session, ProbeRequest(args.image, args.prompt, args.max_new_tokens), params)
    summary = {k: list(v["shape"]) for k, v in result.to_dict()["arrays"].items()}
    print(f"{probe.name}: " + ", ".join(f"{k} {v}" for k, v in summary.items()))
    if args.json:
        _write_json(Path(args.json), result.to_dict())
        print(f"wrote {args.json}")
    if args.save:
        paths = result.save(args.save)
        print("wrote " + " and ".join(str(p) for p in paths))
    return 0


def cmd_export(args) -> int:
    from studio.sharing.export import export_runs
    run = {"probe": args.name, "params": dict(_parse_param(p) for p in args.param)}
    out = export_runs(args.out, _session(args), args.image, args.prompt, [run], args.max_new_tokens, force=args.force)
    print(f"wrote {out}/notebook.ipynb with request.json, image.png, results/ and figures.html")
    return 0


def _parse_param(text: str) -> tuple[str, object]:
    """``name=value`` with value read as JSON when it parses (numbers, null, lists), else a string."""
    if "=" not in text:
        raise StudioError(f"--param takes name=value; got {text!r}")
    name, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return name.strip(), value


def cmd_world_train(args) -> int:
    from studio.world.train import TrainConfig, train
    if args.quick:
        config = TrainConfig.quick(seed=args.seed, device=args.device)
    else:
        steps = {k: v for k, v in (("vision_steps", args.vision_steps), ("joint_steps", args.joint_steps))
                 if v is not None}
        config = TrainConfig(seed=args.seed, device=args.device, **steps)
    if args.continue_from:
        from studio.world.train import continue_with_context
        log = continue_with_context(args.continue_from, config, args.out)
        losses = log.context
    else:
        _, _, log = train(config, out_dir=args.out)
        losses = log.joint
    first, last = losses[0], sum(losses[-3:]) / len(losses[-3:])
    print(f"saved to {args.out}; loss {first:.3f} -> {last:.3f}")
    return 0


def cmd_world_eval(args) -> int:
    from studio.sharding import Workers
    from studio.world.evaluate import EVAL_SPLITS
    splits = args.splits.split(",")
    unknown = [s for s in splits if s not in EVAL_SPLITS]
    if unknown:
        raise StudioError(f"unknown split(s) {', '.join(unknown)}; choose from {', '.join(EVAL_SPLITS)}")
    workers = Workers.from_env()
    folder = _parts_folder(args, workers)
    workers.start()
    session = _session(args)
    if args.methods:
        return _compare_methods(args, session, splits, workers, folder)
    from studio.world.evaluate import evaluate_split, format_table, report_dict

    def run(answerers: dict, progress: bool) -> list:
        return [evaluate_split(answerers["greedy"], split, args.n, seed=args.seed, progress=progress)[0]
                for split in splits]
    reports = _in_parallel(run, {"greedy": session.answer_batch}, folder, _header(args, session, splits), workers)
    detector = _detector_reports(args, session, folder, workers) if args.detectors else None
    if reports is None:
        return 0
    print(format_table(reports))
    payload = {"model": session.source, "n_scenes": args.n, "seed": args.seed, "splits": report_dict(reports)}
    _add_detectors(payload, detector)
    if args.json:
        _write_json(Path(args.json), payload)
        print(f"wrote {args.json}")
    else:
        print(json.dumps(payload, indent=1))
    return 0


def _detector_reports(args, session, folder: Path | None, workers) -> list | None:
    """The detectors scored on the cooccur and neutral splits, each scene's mentions one item of
    :func:`studio.sharding.map_items` (shared out and resumable under several processes); None
    on the processes other than the main one."""
    from studio.sharding import map_items
    from studio.world.detect_eval import scene_mentions, summarise
    reports = []
    for split in ("cooccur", "neutral"):
        def mentions(key: str, split: str = split) -> list[dict]:
            return scene_mentions(session, split, int(key), seed=args.seed)
        scenes = map_items([str(i) for i in range(args.n)], mentions, folder, f"detector-{split}",
                           {"model": session.source, "n_scenes": args.n, "seed": args.seed}, workers)
        if scenes is not None:
            reports.append(summarise(split, args.n, [record for scene in scenes for record in scene]))
    return reports if workers.main else None


def _add_detectors(payload: dict, detector: list | None) -> None:
    """Print the detectors' table and put it in the payload, when they were scored."""
    if detector is not None:
        from studio.world.detect_eval import format_detector_table, report_dicts
        print(format_detector_table(detector))
        payload["detectors"] = report_dicts(detector)


def _parts_folder(args, workers) -> Path | None:
    """Where each process keeps its answers: ``--parts``, else beside ``--json`` when several
    processes run; None for a plain one-process run."""
    if args.parts:
        return Path(args.parts)
    if workers.world > 1:
        if not args.json:
            raise InputError("a run over several processes needs --json FILE (its parts are kept in FILE.parts) "
                             "or --parts DIR")
        return Path(f"{args.json}.parts")
    return None


def _header(args, session, splits: list[str]) -> dict:
    """What every answer of a world eval depends on (parts written under other settings are refused)."""
    return {"model": session.source, "n_scenes": args.n, "seed": args.seed, "splits": splits}


def _in_parallel(run, answerers: dict, folder: Path | None, header: dict, workers):
    """``run(answerers, progress)`` as one process, or shared out: every process answers its calls
    into ``folder`` (:class:`studio.sharding.ShardedCalls`), then the main process runs again on
    the merged answers. None on the other processes."""
    if folder is None:
        return run(answerers, True)
    from studio.sharding import ShardedCalls
    sharded = {name: ShardedCalls(answer, folder, f"world-eval-{name}", {**header, "method": name}, workers)
               for name, answer in answerers.items()}
    run(sharded, workers.main)
    workers.barrier()
    if not workers.main:
        return None
    return run({name: calls.replay() for name, calls in sharded.items()}, False)


def _compare_methods(args, session, splits: list[str], workers, folder: Path | None) -> int:
    from studio.cli.benchmarks import _strategies
    from studio.world.compare import (
        compare_methods,
        comparison_dict,
        format_comparison,
        strategy_answerer,
    )
    strategies = _strategies(args)
    answerers = {name: strategy_answerer(session, s) for name, s in strategies.items()}
    header = {**_header(args, session, splits), "params": {n: asdict(s) for n, s in strategies.items()}}
    scores = _in_parallel(lambda given, progress: compare_methods(given, splits, args.n, seed=args.seed,
                                                                  progress=progress),
                          answerers, folder, header, workers)
    detector = _detector_reports(args, session, folder, workers) if args.detectors else None
    if scores is None:
        return 0
    print(format_comparison(scores))
    payload = {"model": session.source, "n_scenes": args.n, "seed": args.seed,
               "methods": {n: asdict(s) | {"name": n} for n, s in strategies.items()},
               "comparison": comparison_dict(scores)}
    _add_detectors(payload, detector)
    if args.json:
        _write_json(Path(args.json), payload)
        print(f"wrote {args.json}")
    return 0


def cmd_space(args) -> int:
    from studio.sharing.space import write_space
    out = write_space(args.out_dir, force=args.force, wheel=args.wheel)
    print(f"wrote a Hugging Face Space to {out}: push it with `huggingface-cli upload` or git")
    return 0


def cmd_world_sample(args) -> int:
    from studio.world.language import caption
    from studio.world.render import render
    from studio.world.scenes import sample_split
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    truth = []
    for scene in sample_split(args.split, args.n, start=args.start):
        name = f"{args.split}-{scene.seed:05d}.png"
        render(scene).save(out / name)
        truth.append({"image": name, "caption": caption(scene), **scene.to_dict()})
        print(f"{name}: {caption(scene)}")
    _write_json(out / "ground_truth.json", truth)
    return 0


def _write_json(path: Path, payload) -> None:
    """Write JSON atomically (temporary file, then rename), so nothing is left half-written."""
    atomic_write_json(path, payload)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="vlm-studio", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("launch", help="open the Gradio studio (embedded model by default)")
    _model_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0 to expose)")
    p.add_argument("--port", type=whole(1, 65535), default=7860)
    p.add_argument("--concepts", metavar="DIR", help="concept dictionary folder (default: the shipped studio/assets/concepts)")
    p.add_argument("--steering", metavar="DIR", help="preference direction folder (default: the shipped studio/assets/steering)")
    p.set_defaults(func=cmd_launch)

    p = sub.add_parser("describe", help="answer one prompt about one image and print the answer")
    p.add_argument("image", help="path of the image")
    p.add_argument("--prompt", default="describe the image .", help="the question or instruction")
    p.add_argument("--max-new-tokens", type=NEW_TOKENS, default=64)
    p.add_argument("--json", action="store_true", help="print tokens with probabilities as JSON")
    _model_args(p)
    p.set_defaults(func=cmd_describe)

    from probes import REGISTRY
    p = sub.add_parser("probe", help="run one probe and print or save its result",
                       description="probes: " + "; ".join(f"{n}: {pr.description}" for n, pr in REGISTRY.items()))
    p.add_argument("name", choices=sorted(REGISTRY), help="which probe")
    p.add_argument("image", help="path of the image")
    p.add_argument("--prompt", default="describe the image .")
    p.add_argument("--max-new-tokens", type=NEW_TOKENS, default=48)
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="a probe parameter, e.g. --param answer_index=2 (repeatable)")
    p.add_argument("--json", help="write the full result as JSON to this file")
    p.add_argument("--save", metavar="STEM", help="write STEM.json + STEM.npz")
    _model_args(p)
    p.set_defaults(func=cmd_probe)

    world = sub.add_parser("world", help="the synthetic scene world: train, evaluate, sample").add_subparsers(
        dest="world_command", required=True)
    p = world.add_parser("train", help="train the embedded model from scratch (fixed seed)")
    p.add_argument("--out", default="runs/world-model", help="folder to save the model in")
    p.add_argument("--seed", type=NON_NEGATIVE, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--vision-steps", type=NON_NEGATIVE, default=None, help="vision pre-training steps (default 600)")
    p.add_argument("--joint-steps", type=NON_NEGATIVE, default=None, help="caption/question steps (default 4000)")
    p.add_argument("--quick", action="store_true", help="a tiny model for a few steps (a smoke test)")
    p.add_argument("--continue-from", metavar="DIR",
                   help="run only the last phase (conflict context) on a model saved after phase 3")
    p.set_defaults(func=cmd_world_train)

    p = world.add_parser("eval", help="POPE, CHAIR and question accuracy per split")
    _model_args(p)
    p.add_argument("--splits", default="neutral,cooccur,colour_prior")
    p.add_argument("--n", type=POSITIVE, default=300, help="scenes per split")
    p.add_argument("--seed", type=NON_NEGATIVE, default=0)
    p.add_argument("--json", help="write the report as JSON to this file (else print it)")
    p.add_argument("--methods", help="compare decoding methods, e.g. greedy,vcd,sid,icd (with bootstrap CIs)")
    p.add_argument("--set", action="append", default=[], metavar="METHOD.PARAM=VALUE",
                   help="a method's parameter, e.g. --set sid.layer=3 --set vcd.alpha=0.5 (repeatable)")
    p.add_argument("--detectors", action="store_true",
                   help="also score the hallucination detectors (AUROC, grounding) on the cooccur and neutral splits")
    p.add_argument("--parts", metavar="DIR",
                   help="keep each process's answers here, so an interrupted run resumes (default with several "
                        "processes under torchrun / accelerate launch: JSON.parts beside --json)")
    p.set_defaults(func=cmd_world_eval)

    p = world.add_parser("sample", help="render scenes with ground truth to a folder")
    p.add_argument("--split", default="neutral", choices=["train", "neutral", "cooccur", "colour_prior"])
    p.add_argument("--n", type=POSITIVE, default=8)
    p.add_argument("--start", type=NON_NEGATIVE, default=0, help="first scene seed")
    p.add_argument("--out", default="samples")
    p.set_defaults(func=cmd_world_sample)

    p = sub.add_parser("export", help="run a probe (decode, steer and clamp included) and export it as a notebook "
                                      "that re-runs it")
    p.add_argument("name", choices=sorted(REGISTRY), help="which probe")
    p.add_argument("image", help="path of the image")
    p.add_argument("--prompt", default="describe the image .")
    p.add_argument("--max-new-tokens", type=NEW_TOKENS, default=48)
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--out", required=True, help="folder to write (must be empty or absent)")
    p.add_argument("--force", action="store_true", help="replace a non-empty folder")
    _model_args(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("space", help="write a ready-to-push Hugging Face Space running the embedded model")
    p.add_argument("out_dir", help="folder to write (must be empty or absent)")
    p.add_argument("--force", action="store_true", help="replace a non-empty folder")
    p.add_argument("--wheel", metavar="FILE", help="the studio's wheel to ship (default: built from this checkout)")
    p.set_defaults(func=cmd_space)

    from studio.cli import benchmarks, representations
    with_session = lambda command: lambda args: command(args, _session(args))  # noqa: E731
    representations.add_commands(sub, _model_args, with_session)
    benchmarks.add_commands(sub, world, _model_args, with_session)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, or a refused argument (one error line already printed)
        return done.code if isinstance(done.code, int) else 2
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    from studio.world.anchors import register as register_world_anchors
    register_world_anchors()  # the world's text-to-image model for the anchors decoding method
    try:
        with repeated_interrupts():
            return args.func(args)
    except StudioError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _close_progress_bars()
        print("error: interrupted", file=sys.stderr)
        return 130


def _close_progress_bars() -> None:
    """Close the bars an interrupted job left open, so the error is the last line printed."""
    from tqdm import tqdm
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()
