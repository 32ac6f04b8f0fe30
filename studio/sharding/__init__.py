"""Data-parallel runs: the processes of a ``torchrun`` or ``accelerate launch`` share a long job.

A long command (``world eval``, ``eval pope``, ``eval chair``) is a deterministic sequence of
model calls, each a batch of prompts. With N processes, call ``k`` belongs to process
``k mod N`` (:meth:`Workers.owns`): every batch is composed exactly as in a one-process run,
so every answer is the same, and the merged result is identical to one process's. Each
process writes what it answers to its own part file (an append-only
:class:`~studio.benchmarks.answers.AnswerLog`, fsynced per call) named for its rank and the
process count; after a barrier, the main process reads every part and merges. A process that
dies leaves its part: a re-run with the same settings and process count skips what is done.
Parts from another run (other settings) or another process count are refused with one line,
before anything is merged.

The launchers set ``RANK`` and ``WORLD_SIZE`` (and the rendezvous variables); the processes
meet through ``torch.distributed`` with the gloo backend on CPU (NCCL on GPUs), used only for
barriers. A plain ``python`` / ``vlm-studio`` run is one process and needs none of it.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from studio.benchmarks.answers import AnswerLog
from studio.engine.errors import InputError

Answer = Callable[[list, list[str], int], list[str]]


@dataclass(frozen=True)
class Workers:
    """This process's place in a data-parallel run: ``rank`` of ``world`` processes."""

    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls) -> Workers:
        """The launcher's ``RANK`` / ``WORLD_SIZE`` (torchrun, accelerate launch), or one process."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        if not 0 <= rank < world:
            raise InputError(f"RANK {rank} is outside WORLD_SIZE {world}")
        return cls(rank, world)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def owns(self, index: int) -> bool:
        """Whether call ``index`` of the job is this process's."""
        return index % self.world == self.rank

    def start(self) -> None:
        """Join the launcher's process group (barriers only); nothing for one process."""
        if self.world > 1 and not torch.distributed.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            torch.distributed.init_process_group(backend)

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def map_batches(self, batches: list, answer: Callable[[Any], list]) -> list:
        """``answer(batch)`` for every batch, concatenated in batch order: each process answers the
        batches it owns and all processes receive every answer (all-gather), so a multi-stage job
        whose next inputs depend on these answers continues identically on every process. Inside
        :func:`kept_batches`, each answered batch is also kept in this process's part (and read
        back from it when a run resumes)."""
        kept = _KEPT.get()
        call = kept.next_call() if kept is not None else 0
        mine = {k: kept.answer(f"{call}:{k}", answer, batch) if kept is not None else answer(batch)
                for k, batch in enumerate(batches) if self.owns(k)}
        if self.world > 1:
            gathered: list[dict[int, list] | None] = [None] * self.world
            torch.distributed.all_gather_object(gathered, mine)
            mine = {k: v for part in gathered if part for k, v in part.items()}
        return [answer for k in range(len(batches)) for answer in mine[k]]


@dataclass
class _BatchLog:
    """The batches a multi-stage job has answered, by ``"<map_batches call>:<batch>"``."""

    log: AnswerLog
    calls: int = field(default=0)

    def next_call(self) -> int:
        self.calls += 1
        return self.calls - 1

    def answer(self, key: str, answer: Callable[[Any], list], batch: Any) -> list:
        done = self.log.done().get(key)
        if done is not None:
            return list(done["answer"])
        answers = answer(batch)
        self.log.append(key, {"answer": answers})
        return answers


_KEPT: ContextVar[_BatchLog | None] = ContextVar("kept_batches", default=None)


@contextmanager
def kept_batches(folder: Path | None, tag: str, header: Mapping[str, Any], workers: Workers) -> Iterator[None]:
    """Within it, :meth:`Workers.map_batches` keeps every batch this process answers in its part
    ``folder/tag.part-<rank>-of-<N>.jsonl`` (a job of several stages, such as ``steer fit``,
    numbers its calls in order), so a re-run with the same ``header`` and process count answers
    only what no process kept. Parts of other settings or another process count are refused.
    Nothing is kept with no folder."""
    if folder is None:
        yield
        return
    token = _KEPT.set(_BatchLog(open_part(folder, tag, header, workers)))
    try:
        yield
    finally:
        _KEPT.reset(token)


PART = re.compile(r"^(?P<tag>.+)\.part-(?P<rank>\d+)-of-(?P<world>\d+)\.jsonl$")


def part_path(folder: Path, tag: str, workers: Workers, rank: int | None = None) -> Path:
    return Path(folder) / f"{tag}.part-{workers.rank if rank is None else rank}-of-{workers.world}.jsonl"


def check_parts(folder: Path, tag: str, workers: Workers) -> None:
    """InputError if ``folder`` holds parts of ``tag`` written by another process count."""
    if not Path(folder).is_dir():
        return
    for path in sorted(Path(folder).iterdir()):
        match = PART.match(path.name)
        if match and match["tag"] == tag and int(match["world"]) != workers.world:
            raise InputError(f"{folder} holds parts of a run with {match['world']} processes ({path.name}); "
                             f"finish it with {match['world']} processes, or delete them")


def open_part(folder: Path, tag: str, header: Mapping[str, Any], workers: Workers) -> AnswerLog:
    """This process's part of job ``tag`` in ``folder``, after refusing parts written by another
    process count; its header is ``header`` with the job's tag, process count and this rank."""
    check_parts(folder, tag, workers)
    return AnswerLog(part_path(folder, tag, workers), {**header, "tag": tag, "world": workers.world,
                                                      "rank": workers.rank})


def read_parts(folder: Path, tag: str, header: Mapping[str, Any], workers: Workers) -> dict[str, Any]:
    """Every process's records of job ``tag``, answer by id; an InputError if a process's part is
    missing (that process did not run)."""
    merged: dict[str, Any] = {}
    for rank in range(workers.world):
        path = part_path(folder, tag, workers, rank)
        if not path.is_file():
            raise InputError(f"{path} is missing: process {rank} did not run; re-run with the same settings")
        log = AnswerLog(path, {**header, "tag": tag, "world": workers.world, "rank": rank})
        merged.update({key: record["answer"] for key, record in log.done().items()})
    return merged


class ShardedCalls:
    """An answer function's calls shared out over the processes, with results kept in part files.

    Called like ``answer(images, prompts, max_new_tokens)``: this process answers the calls it
    owns (or reads them back from its part, when a run resumes) and returns empty answers for
    the others. :meth:`replay` (after every process has finished its calls) gives an answer
    function that returns, call by call, what the owning processes answered."""

    def __init__(self, answer: Answer, folder: Path, tag: str, header: Mapping[str, Any], workers: Workers) -> None:
        self.answer, self.folder, self.tag, self.header, self.workers = answer, Path(folder), tag, header, workers
        self.log = open_part(folder, tag, header, workers)
        self.calls = 0

    def __call__(self, images: list, prompts: list[str], max_new_tokens: int) -> list[str]:
        index = self.calls
        self.calls += 1
        if not self.workers.owns(index):
            return [""] * len(prompts)
        done = self.log.done().get(str(index))
        if done is not None and len(done["answer"]) == len(prompts):
            return list(done["answer"])
        answers = self.answer(images, prompts, max_new_tokens)
        self.log.append(str(index), {"answer": answers})
        return answers

    def replay(self) -> Answer:
        """The merged answers (read from every part) as an answer function, call by call; an
        InputError if a part is missing a call (a process did not finish)."""
        merged = read_parts(self.folder, self.tag, self.header, self.workers)
        missing = [k for k in range(self.calls) if str(k) not in merged]
        if missing:
            raise InputError(f"the parts in {self.folder} miss {len(missing)} of {self.calls} calls of {self.tag} "
                             f"(first: {missing[0]}); re-run with the same settings to finish them")
        counter = iter(range(self.calls))

        def answer(images: list, prompts: list[str], max_new_tokens: int) -> list[str]:
            return list(merged[str(next(counter))])
        return answer


def map_items(keys: list[str], compute: Callable[[str], Any], folder: Path | None, tag: str,
              header: Mapping[str, Any], workers: Workers, progress: bool = True) -> list | None:
    """``compute(key)`` for every key, in key order, shared out over the processes.

    Each item is independent (one scene's detector records, say): item ``k`` belongs to process
    ``k mod N``, which writes its result (JSON) to its own part in ``folder`` as soon as it has
    it, so a re-run skips what is done. After a barrier the main process reads every part and
    returns all results in key order; the other processes return None. With no folder (one
    plain process) the items are computed in turn and nothing is written."""
    from tqdm.auto import tqdm
    if folder is None:
        return [compute(key) for key in tqdm(keys, desc=tag, disable=not progress)]
    log = open_part(folder, tag, header, workers)
    done = log.done()
    for k, key in enumerate(tqdm(keys, desc=tag, disable=not (progress and workers.main))):
        if workers.owns(k) and key not in done:
            log.append(key, {"answer": compute(key)})
    workers.barrier()
    if not workers.main:
        return None
    merged = read_parts(folder, tag, header, workers)
    missing = [key for key in keys if key not in merged]
    if missing:
        raise InputError(f"the parts in {folder} miss {len(missing)} of {len(keys)} items of {tag} "
                         f"(first: {missing[0]}); re-run with the same settings to finish them")
    return [merged[key] for key in keys]
