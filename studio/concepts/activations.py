"""Residual-stream activations over world scenes, streamed to disk in shards.

Each scene is read teacher-forced (the caption prompt and its ground-truth caption), and the
output of one decoder layer is kept at every image-patch position and every word after the
image (prompt and caption). Rows are written in safetensors shards of bounded size, so memory stays flat however
many scenes are collected; a shard is written to a temporary name and renamed when complete,
and ``meta.json`` (written last) marks the set as whole.

Row metadata (``meta`` int32 [n, 4]): scene seed, position kind (0 patch, 1 word), patch index
in the row-major grid (-1 for words), token id.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save
from tqdm.auto import tqdm

from studio.engine.errors import InputError
from studio.engine.files import atomic_write, atomic_write_json
from studio.engine.placement import weight_of
from studio.sharding import Workers
from studio.world.language import CAPTION_PROMPT, caption
from studio.world.modelkit import chat_batch
from studio.world.render import render
from studio.world.scenes import sample_scene

PATCH, WORD = 0, 1
META_FILE = "meta.json"


@dataclass(frozen=True)
class CollectConfig:
    """What to collect: ``n_scenes`` scenes of ``split`` (seeds ``start``..), decoder ``layer``."""

    layer: int
    n_scenes: int = 2000
    split: str = "train"
    start: int = 0
    batch: int = 32
    shard_rows: int = 50_000

    def __post_init__(self) -> None:
        if self.n_scenes < 1 or self.batch < 1 or self.shard_rows < 1:
            raise InputError("n_scenes, batch and shard_rows must be at least 1")


def model_fingerprint(model) -> str:
    """A short digest of the model's shape and the signs of a strided sample of its unembedding,
    so activations, dictionaries and directions can refuse a different model. It ignores where
    the model was loaded from and its dtype (signs survive fp32 -> bf16)."""
    weight = weight_of(model.get_output_embeddings()).detach()
    sample = weight.flatten()[:: max(1, weight.numel() // 4096)].float().cpu() > 0
    shape = f"{model.config.model_type}:{tuple(weight.shape)}:{len(list(model.modules()))}"
    return hashlib.sha256(shape.encode() + sample.numpy().tobytes()).hexdigest()[:16]


def _layer_rows(session, inputs: dict, hidden: torch.Tensor, seeds: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    ids = inputs["input_ids"]
    image_id = session.adapter.image_token_id()
    specials = set(session.tokenizer.all_special_ids)
    acts, meta = [], []
    for b, seed in enumerate(seeds):
        row = ids[b].tolist()
        patches = [i for i, t in enumerate(row) if t == image_id]
        words = [i for i in range(patches[-1] + 1, len(row)) if row[i] not in specials]
        for kind, positions in ((PATCH, patches), (WORD, words)):
            acts.append(hidden[b, positions])
            meta += [[seed, kind, n if kind == PATCH else -1, row[p]] for n, p in enumerate(positions)]
    return torch.cat(acts), torch.tensor(meta, dtype=torch.int32)


def collect(session, config: CollectConfig, out_dir: str | Path, progress: bool = True,
            workers: Workers | None = None) -> ActivationSet | None:
    """Run the scenes through the session's model and write the layer's activations to ``out_dir``.

    Batch ``k`` of scenes is computed by process ``k mod N`` of a data-parallel run (one process:
    all of them) and kept as a part file of its own (``parts-<run>/batch_<k>.safetensors``,
    written atomically, skipped when a re-run finds it); the main process then cuts the rows,
    in batch order, into the same shards one process writes, and ``meta.json``. Returns the set
    on the main process, None on the others."""
    if not 0 <= config.layer < session.n_layers:
        raise InputError(f"layer {config.layer} is out of range: choose 0..{session.n_layers - 1}")
    workers = workers or Workers.from_env()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = model_fingerprint(session.model)
    parts = out / f"parts-{_run_digest(config, fingerprint)}"
    starts = range(config.start, config.start + config.n_scenes, config.batch)
    batches = [list(range(first, min(first + config.batch, config.start + config.n_scenes))) for first in starts]
    mine = [k for k in range(len(batches)) if workers.owns(k)]
    with tqdm(total=sum(len(batches[k]) for k in mine), desc=f"activations layer {config.layer}",
              disable=not (progress and workers.main)) as bar:
        for k in mine:
            if not (parts / _part_name(k)).is_file():
                _write_part(session, config, batches[k], parts / _part_name(k))
            bar.update(len(batches[k]))
    workers.barrier()
    if not workers.main:
        return None
    (out / META_FILE).unlink(missing_ok=True)
    record = {"config": asdict(config), "model": fingerprint, **_assemble(out, parts, len(batches), config.shard_rows)}
    atomic_write_json(out / META_FILE, record)
    shutil.rmtree(parts)
    return ActivationSet(out)


def _run_digest(config: CollectConfig, fingerprint: str) -> str:
    return hashlib.sha256(json.dumps([asdict(config), fingerprint], sort_keys=True).encode()).hexdigest()[:12]


def _part_name(index: int) -> str:
    return f"batch_{index:06d}.safetensors"


def _write_part(session, config: CollectConfig, seeds: list[int], path: Path) -> None:
    """One batch of scenes read teacher-forced; its rows at the layer, kept as one part file."""
    scenes = [sample_scene(s, config.split) for s in seeds]
    inputs = chat_batch(session.processor, [render(s) for s in scenes], [CAPTION_PROMPT] * len(scenes),
                        [caption(s) for s in scenes]).to(session.device)
    hidden = session.layer_outputs(dict(inputs), [config.layer])[0]
    acts, meta = _layer_rows(session, inputs, hidden.float().cpu(), seeds)
    atomic_write(path, save({"acts": acts.contiguous(), "meta": meta.contiguous()}))


def _assemble(out: Path, parts: Path, n_batches: int, shard_rows: int) -> dict:
    """The parts, in batch order, cut into shards of at least ``shard_rows`` rows (as they filled up)."""
    buffer_a: list[torch.Tensor] = []
    buffer_m: list[torch.Tensor] = []
    shards: list[str] = []
    rows = d_model = 0
    for k in range(n_batches):
        part = load_file(str(parts / _part_name(k)))
        buffer_a.append(part["acts"])
        buffer_m.append(part["meta"])
        rows, d_model = rows + len(part["acts"]), int(part["acts"].shape[1])
        if sum(len(a) for a in buffer_a) >= shard_rows:
            shards.append(_write_shard(out, len(shards), buffer_a, buffer_m))
            buffer_a, buffer_m = [], []
    if buffer_a:
        shards.append(_write_shard(out, len(shards), buffer_a, buffer_m))
    return {"rows": rows, "d_model": d_model, "shards": shards}


def _write_shard(out: Path, index: int, acts: list, meta: list) -> str:
    name = f"shard_{index:04d}.safetensors"
    atomic_write(out / name, save({"acts": torch.cat(acts).contiguous(), "meta": torch.cat(meta).contiguous()}))
    return name


class ActivationSet:
    """A collected set on disk: metadata, whole-set loading and shuffled training batches."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        meta_path = self.folder / META_FILE
        if not meta_path.is_file():
            raise InputError(f"{self.folder} holds no complete activation set (no {META_FILE})")
        self.meta = json.loads(meta_path.read_text())
        self.layer = self.meta["config"]["layer"]
        self.d_model = self.meta["d_model"]

    def __len__(self) -> int:
        return self.meta["rows"]

    def load(self) -> tuple[torch.Tensor, np.ndarray]:
        """All activations [n, d] and their metadata [n, 4] in memory."""
        parts = [load_file(str(self.folder / s)) for s in self.meta["shards"]]
        return torch.cat([p["acts"] for p in parts]), torch.cat([p["meta"] for p in parts]).numpy()

    def batches(self, batch_size: int, seed: int = 0) -> Iterator[torch.Tensor]:
        """Endless shuffled batches, one shard in memory at a time (shards visited in random order)."""
        rng = np.random.default_rng(seed)
        while True:
            for shard in rng.permutation(self.meta["shards"]):
                acts = load_file(str(self.folder / shard))["acts"]
                order = torch.from_numpy(rng.permutation(len(acts)))
                for start in range(0, len(acts) - batch_size + 1, batch_size):
                    yield acts[order[start:start + batch_size]]
