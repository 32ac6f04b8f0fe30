"""``vlm-studio eval pope`` and ``eval chair``: answer a benchmark with each decoding method, resumably,
and report per-method figures with paired-bootstrap intervals of the differences to greedy.

A run is a list of :class:`Item` (an image, a prompt, an id) answered by every method. Each
method's answers go to its own :class:`~studio.benchmarks.answers.AnswerLog` in the output
folder (``answers-<method>.jsonl``) as soon as a batch is decoded, so Ctrl-C loses at most one
batch and a re-run with the same folder asks only what is missing. ``report.json`` is written
last, atomically, and only when every method has answered every item: a folder with a report is
complete. Figures are ratios of per-item counts, so one bootstrap over items (seeded) gives the
intervals, exactly as ``world eval --methods`` does over scenes.
"""
from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from studio.benchmarks.answers import AnswerLog
from studio.benchmarks.chair import caption_counts, ground_truth, vocabulary_for
from studio.benchmarks.coco import image_paths, read_coco
from studio.benchmarks.intervals import Interval, paired_bootstrap
from studio.benchmarks.pope import PopeCounts, find_images, pope_counts, pope_from_counts, read_pope_file
from studio.decoding import DecodingStrategy
from studio.engine.errors import InputError
from studio.engine.files import atomic_write_json
from studio.engine.session import ModelSession
from studio.sharding import Workers, check_parts, part_path

CHAIR_PROMPT = "Please describe this image in detail."  # the prompt of the VCD / OPERA / SID CHAIR scripts
POPE_METRICS = ("accuracy", "precision", "recall", "f1", "yes_ratio")
CHAIR_METRICS = ("chair_s", "chair_i", "recall")


@dataclass(frozen=True)
class Item:
    """One question or captioning request: ``group`` is what it is scored with (a POPE file, or "chair")."""

    id: str
    image: Path
    prompt: str
    group: str
    truth: Any = None


@dataclass
class RunSettings:
    """What every answer of a run depends on; a log written under other settings is refused."""

    benchmark: str
    model: str
    max_new_tokens: int
    batch_size: int
    data: str  # a digest of the items (ids, images, prompts)


def items_digest(items: Sequence[Item]) -> str:
    """A short digest of the items' ids, image names and prompts (what the answers are answers to)."""
    text = "\n".join(f"{i.id}\t{i.image.name}\t{i.prompt}" for i in items)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _batches(items: Sequence[Item], size: int) -> Iterator[list[Item]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def answer_items(session: ModelSession, name: str, strategy: DecodingStrategy, items: Sequence[Item],
                 log: AnswerLog, settings: RunSettings, progress: bool = True,
                 workers: Workers = Workers()) -> dict[str, str]:
    """The answers under ``strategy`` of the items of this process's batches (all of them for one
    process): those already in ``log`` read back, the rest decoded and appended to ``log`` batch by
    batch. Batches are cut from the whole item list in order, always the same way, so a resumed
    or data-parallel run decodes exactly the batches of an uninterrupted one-process run (a batch
    cut short by an interruption is decoded again whole, and only its missing answers are kept)."""
    strategy.check(session)
    done = {key: record["answer"] for key, record in log.done().items()}
    mine = [chunk for k, chunk in enumerate(_batches(items, settings.batch_size)) if workers.owns(k)]
    with tqdm(total=sum(map(len, mine)), desc=f"{settings.benchmark} {name}", disable=not progress) as bar:
        for chunk in mine:
            if any(item.id not in done for item in chunk):
                texts = session.answer_batch([i.image for i in chunk], [i.prompt for i in chunk],
                                             settings.max_new_tokens, strategy)
                new = {item.id: text for item, text in zip(chunk, texts) if item.id not in done}
                log.extend({key: {"answer": text} for key, text in new.items()})
                done.update(new)
            bar.update(len(chunk))
    return {item.id: done[item.id] for chunk in mine for item in chunk}


def _header(settings: RunSettings, name: str, strategy: DecodingStrategy) -> dict:
    return {**asdict(settings), "method": name, "params": asdict(strategy)}


def merge_parts(out: Path, name: str, header: dict, items: Sequence[Item], workers: Workers) -> AnswerLog:
    """The method's answer log in ``out`` completed, in item order, from every process's part (what a
    one-process run writes); InputError if a part is missing an answer."""
    log = AnswerLog(out / f"answers-{name}.jsonl", header)
    found: dict[str, dict] = {}
    for rank in range(workers.world):
        path = part_path(out, f"answers-{name}", workers, rank)
        if path.is_file():
            found.update(AnswerLog(path, {**header, "rank": rank, "world": workers.world}).done())
    have = log.done()
    for item in items:
        if item.id in have:
            continue
        if item.id not in found:
            raise InputError(f"the parts in {out} hold no answer of {name} to {item.id}: a process did not finish; "
                             "re-run with the same settings and process count")
        log.append(item.id, {k: v for k, v in found[item.id].items() if k != "id"})
    return log


@dataclass
class MethodReport:
    """One method on one group of items (a POPE file, or the CHAIR captions)."""

    method: str
    group: str
    n: int
    interval: Interval


def _pope_metrics(total: dict[str, float]) -> dict[str, float]:
    score = pope_from_counts([PopeCounts(**{k: int(v) for k, v in total.items()})])
    return {m: getattr(score, m) for m in POPE_METRICS}


def _chair_metrics(total: dict[str, float]) -> dict[str, float]:
    """CHAIR from summed per-caption counts (the same ratios as :func:`~studio.benchmarks.chair.chair_from_counts`)."""
    def ratio(num: str, den: str) -> float:
        return total[num] / total[den] if total[den] else 0.0
    return {"chair_s": ratio("bad_caption", "captions"), "chair_i": ratio("hallucinated", "mentions"),
            "recall": ratio("recalled", "objects")}


def score_methods(items: Sequence[Item], answers: Mapping[str, Mapping[str, str]],
                  row: Callable[[Item, str], Mapping[str, float]],
                  metrics: Callable[[dict[str, float]], Mapping[str, float]], seed: int) -> list[MethodReport]:
    """Per group and method: the metrics, intervals and paired differences to greedy."""
    reports = []
    for group in dict.fromkeys(i.group for i in items):
        members = [i for i in items if i.group == group]
        rows = {name: [row(i, given[i.id]) for i in members] for name, given in answers.items()}
        for name in answers:
            reports.append(MethodReport(name, group, len(members),
                                        paired_bootstrap(rows[name], rows["greedy"], metrics, seed=seed)))
    return reports


def pope_items(question_files: Sequence[Path], images: Path, suffix: str = "", limit: int | None = None) -> list[Item]:
    """The questions of each POPE file (the first ``limit`` of each when given), images checked."""
    paths = find_images(question_files, images)
    items = []
    for file in question_files:
        questions = read_pope_file(file)[:limit]
        items += [Item(id=f"{Path(file).stem}:{q.question_id}", image=paths[q.image],
                       prompt=f"{q.text}{suffix}", group=Path(file).stem, truth=q.label) for q in questions]
    if len({i.id for i in items}) != len(items):
        raise InputError("two question files share a name, or a file repeats a question_id: every question needs "
                         "a unique (file name, question_id)")
    return items


def chair_items(annotations: Path, images: Path, prompt: str = CHAIR_PROMPT, limit: int | None = None,
                seed: int = 0) -> list[Item]:
    """Captioning requests for the images of a COCO folder (all, or a seeded sample of ``limit``,
    in image-id order), each holding its ground-truth objects (annotated categories and objects
    named in its reference captions, as CHAIR takes them)."""
    data = read_coco(annotations)
    chosen = sorted(data.images)
    if limit is not None and limit < len(chosen):
        chosen = sorted(random.Random(seed).sample(chosen, limit))
    images_of = [data.images[i] for i in chosen]
    paths = image_paths(images_of, images)
    vocab = vocabulary_for(data.categories)
    return [Item(id=str(img.image_id), image=paths[img.image_id], prompt=prompt, group="chair",
                 truth=(ground_truth(img.categories, img.captions, vocab), vocab)) for img in images_of]


def pope_row(item: Item, answer: str) -> dict[str, float]:
    """An answer's POPE counts."""
    return asdict(pope_counts(answer, item.truth))


def chair_row(item: Item, answer: str) -> dict[str, float]:
    """A caption's CHAIR counts."""
    truth, vocab = item.truth
    c = caption_counts(answer, truth, vocab)
    return {"hallucinated": c.hallucinated, "mentions": c.mentions, "recalled": c.recalled, "objects": c.objects,
            "bad_caption": c.bad_caption, "captions": 1}


def run_benchmark(session: ModelSession, methods: Mapping[str, DecodingStrategy], items: Sequence[Item],
                  out: Path, settings: RunSettings, seed: int = 0, progress: bool = True,
                  workers: Workers = Workers()) -> list[MethodReport]:
    """Answer ``items`` with every method (greedy first), logging to ``out``; score; write
    ``report.json``. With several processes, each answers its batches into its part
    (``answers-<method>.part-<rank>-of-<n>.jsonl``), and the main process merges the parts into
    the logs one process writes, then scores; the others return an empty list."""
    if "greedy" not in methods:
        raise InputError("the methods must include greedy: every difference is to greedy")
    headers = {name: _header(settings, name, strategy) for name, strategy in methods.items()}
    for name in methods:
        check_parts(out, f"answers-{name}", workers)
    for name, strategy in methods.items():
        if workers.world > 1:
            part = AnswerLog(part_path(out, f"answers-{name}", workers),
                             {**headers[name], "rank": workers.rank, "world": workers.world})
            answer_items(session, name, strategy, items, part, settings, progress and workers.main, workers)
        else:
            answer_items(session, name, strategy, items, AnswerLog(out / f"answers-{name}.jsonl", headers[name]),
                         settings, progress)
    workers.barrier()
    if not workers.main:
        return []
    logs = {name: merge_parts(out, name, headers[name], items, workers) for name in methods}
    answers = {name: {key: record["answer"] for key, record in log.done().items()} for name, log in logs.items()}
    row, metrics = (pope_row, _pope_metrics) if settings.benchmark == "pope" else (chair_row, _chair_metrics)
    reports = score_methods(items, answers, row, metrics, seed)
    atomic_write_json(out / "report.json", {"settings": asdict(settings), "seed": seed,
                                            "methods": {n: asdict(s) for n, s in methods.items()},
                                            "results": [asdict(r) for r in reports]})
    return reports


def format_reports(reports: Sequence[MethodReport], metrics: Sequence[str]) -> str:
    """A plain table per group: each cell the value, and for other methods the difference to greedy
    with its 95% paired-bootstrap interval."""
    lines = ["(each cell: value; for methods other than greedy, the difference to greedy and its 95% paired-bootstrap "
             "interval)"]
    for group in dict.fromkeys(r.group for r in reports):
        lines.append(f"== {group}")
        lines.append(f"  {'method':<10}" + "".join(f"{m:>30}" for m in metrics))
        for r in (x for x in reports if x.group == group):
            cells = []
            for m in metrics:
                lo, hi = r.interval.diff_ci[m]
                delta = "" if r.method == "greedy" else f" {r.interval.diff_to_greedy[m]:+.3f} [{lo:+.3f},{hi:+.3f}]"
                cells.append(f"{r.interval.metrics[m]:.3f}{delta}")
            lines.append(f"  {r.method:<10}" + "".join(f"{c:>30}" for c in cells))
    return "\n".join(lines)
