"""Build a concept dictionary end to end: collect, train (sae-lens), score, ground, map, save.

``vlm-studio concepts train`` runs this; the shipped dictionary in ``studio/assets/concepts`` is its
output with the defaults. Everything the Concepts tab shows without running the model (the
quality figures, each feature's best-matching attribute, its top patches and the UMAP map)
is computed here once and saved beside the SAE in ``studio.json``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from studio.concepts.activations import PATCH, ActivationSet, CollectConfig, collect
from studio.concepts.quality import (
    DictionaryQuality,
    attribute_aurocs,
    encode,
    explained_variance,
    feature_attributes,
    purity,
    splice_loss,
)
from studio.concepts.sae import DictionaryConfig, save_sae, train_sae
from studio.world.language import CAPTION_PROMPT, caption
from studio.world.modelkit import answer_labels, chat_batch
from studio.world.render import render
from studio.world.scenes import sample_scene

TOP_PATCHES = 8


@dataclass(frozen=True)
class BuildConfig:
    """Which layer, how many scenes to learn from and to score on, and the SAE itself.

    Scoring uses fresh scenes of the training distribution (seeds from ``eval_start``, which
    neither the SAE nor the world model saw) because only it holds every kind: the neutral
    split has no cross."""

    layer: int = 1
    train_scenes: int = 3000
    eval_scenes: int = 300
    eval_split: str = "train"
    eval_start: int = 1_000_000
    loss_scenes: int = 64
    sae: DictionaryConfig = DictionaryConfig()


def top_patches(features: np.ndarray, meta: np.ndarray, k: int = TOP_PATCHES) -> list[list[list[float]]]:
    """Per feature, its ``k`` strongest patch rows as [scene seed, patch index, activation]."""
    rows = np.flatnonzero(meta[:, 1] == PATCH)
    scores = features[rows]
    order = np.argsort(-scores, axis=0)[:k]
    return [[[int(meta[rows[i], 0]), int(meta[rows[i], 2]), float(scores[i, f])]
             for i in order[:, f] if scores[i, f] > 0] for f in range(features.shape[1])]


def umap_map(sae, seed: int = 0) -> list[list[float]]:
    """2-D UMAP coordinates of the decoder directions (cosine metric)."""
    import umap
    directions = sae.W_dec.detach().float().cpu().numpy()
    reducer = umap.UMAP(n_components=2, metric="cosine", random_state=seed, n_neighbors=15, min_dist=0.1)
    return reducer.fit_transform(directions).round(4).tolist()


def loss_inputs(session, n: int, split: str = "neutral") -> tuple[dict, torch.Tensor]:
    """Teacher-forced caption batch of ``n`` held-out scenes and its answer labels."""
    scenes = [sample_scene(s, split) for s in range(n)]
    batch = chat_batch(session.processor, [render(s) for s in scenes], [CAPTION_PROMPT] * n,
                       [caption(s) for s in scenes])
    labels = answer_labels(batch, session.tokenizer)
    return {k: v.to(session.device) for k, v in batch.items()}, labels.to(session.device)


def build(session, config: BuildConfig, out_dir: str | Path, cache_dir: str | Path) -> DictionaryQuality | None:
    """Collect, train, score and save; returns the quality figures (also in ``studio.json``). Under a
    data-parallel launch every process shares the collection; the main process trains, scores and
    saves, the others return None."""
    cache = Path(cache_dir)
    train_set = collect(session, CollectConfig(config.layer, config.train_scenes), cache / f"train-l{config.layer}")
    held_out = collect(session, CollectConfig(config.layer, config.eval_scenes, split=config.eval_split,
                                              start=config.eval_start), cache / f"eval-l{config.layer}")
    if train_set is None or held_out is None:
        return None
    sae = train_sae(train_set, config.sae, device=str(session.device))
    quality, extra = score(session, sae, held_out, config)
    extra |= {"build": asdict(config), "quality": quality.to_dict()}
    save_sae(sae, out_dir, extra)
    return quality


def score(session, sae, held_out: ActivationSet, config: BuildConfig) -> tuple[DictionaryQuality, dict]:
    """Quality figures and the grounding saved for the app."""
    acts, meta = held_out.load()
    features = encode(sae, acts.to(sae.W_enc.device))
    with torch.no_grad():
        recon = sae.decode(features).cpu()
    patches = torch.from_numpy(meta[:, 1] == PATCH)
    feats = features.cpu().numpy()
    side = math.isqrt(int((meta[:, 1] == PATCH).sum() // len(set(meta[:, 0].tolist()))))
    aucs = attribute_aurocs(feats, meta, config.eval_split, side)
    clean, spliced = splice_loss(session, sae, config.layer, *loss_inputs(session, config.loss_scenes))
    quality = DictionaryQuality(
        explained_variance=explained_variance(acts, recon),
        explained_variance_patches=explained_variance(acts[patches], recon[patches]),
        explained_variance_words=explained_variance(acts[~patches], recon[~patches]), l0=float((feats > 0).sum(1).mean()),
        dead_share=float((feats.max(0) <= 0).mean()), loss_clean=clean, loss_spliced=spliced,
        purity=purity(aucs))
    extra = {"layer": config.layer, "grid_side": side, "eval_split": config.eval_split,
             "features": feature_attributes(aucs),
             "top_patches": top_patches(feats, meta), "umap": umap_map(sae, config.sae.seed)}
    return quality, extra
