"""How good a dictionary is: reconstruction, sparsity, dead features, the model's loss with the
SAE spliced in, and purity against the world's ground truth (per attribute value, the best
single feature's AUROC for detecting it in a patch)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from scipy.stats import rankdata

from studio.concepts.activations import PATCH
from studio.concepts.labels import attribute_values, patch_labels
from studio.interventions import Intervention

PURE_AUROC = 0.9


@dataclass
class DictionaryQuality:
    """Quality figures of one SAE on a held-out activation set."""

    explained_variance: float
    explained_variance_patches: float
    explained_variance_words: float
    l0: float
    dead_share: float
    loss_clean: float
    loss_spliced: float
    purity: dict = field(default_factory=dict)      # "attribute=value" -> {"feature", "auroc"}

    @property
    def pure_share(self) -> float:
        """Share of attribute values whose best feature reaches AUROC >= 0.9."""
        return float(np.mean([p["auroc"] >= PURE_AUROC for p in self.purity.values()])) if self.purity else 0.0

    def to_dict(self) -> dict:
        return asdict(self) | {"pure_share": self.pure_share}


def explained_variance(x: torch.Tensor, recon: torch.Tensor) -> float:
    """1 - residual variance / variance of ``x`` around its own mean (rows are samples)."""
    return 1 - float(((x - recon) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())


def encode(sae, acts: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    """Feature activations [n, d_sae] in chunks."""
    with torch.no_grad():
        return torch.cat([sae.encode(acts[i:i + batch].to(sae.W_enc.dtype)) for i in range(0, len(acts), batch)])


def auroc_columns(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """AUROC of every column of ``scores`` [n, f] for the boolean labels ``positive`` [n]
    (Mann-Whitney with tied ranks averaged, so the many zeros of a sparse code count fairly)."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return np.full(scores.shape[1], np.nan)
    ranks = rankdata(scores, axis=0)
    return (ranks[positive].sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def attribute_aurocs(features: np.ndarray, meta: np.ndarray, split: str, side: int) -> np.ndarray:
    """AUROC [attribute values, features] of each feature for each attribute value, over patch
    rows; features that never fire on a patch score 0.5 (they cannot rank)."""
    rows = meta[:, 1] == PATCH
    labels = patch_labels(meta[rows, 0], meta[rows, 2], split, side)
    scores = features[rows]
    return np.nan_to_num(np.stack([auroc_columns(scores, labels[:, j]) for j in range(labels.shape[1])]), nan=0.5)


def purity(aucs: np.ndarray) -> dict:
    """Best feature and its AUROC per attribute value."""
    return {f"{a}={v}": {"feature": int(aucs[j].argmax()), "auroc": float(aucs[j].max())}
            for j, (a, v) in enumerate(attribute_values())}


def feature_attributes(aucs: np.ndarray) -> list[dict]:
    """Per feature, the attribute value it detects best, with that AUROC."""
    values = attribute_values()
    return [{"attribute": values[b][0], "value": values[b][1], "auroc": float(aucs[b, f])}
            for f, b in enumerate(aucs.argmax(0))]


def splice_loss(session, sae, layer: int, inputs: dict, labels: torch.Tensor) -> tuple[float, float]:
    """Mean next-token loss on labelled tokens, clean and with layer ``layer``'s output replaced
    by the SAE's reconstruction (no error term: this measures what the dictionary loses)."""
    def reconstruct(h: torch.Tensor) -> torch.Tensor:
        return sae.decode(sae.encode(h.to(sae.W_enc.dtype))).to(h.dtype)

    def loss() -> float:
        return session.model(**inputs, labels=labels).loss.item()
    splice = Intervention("residual", layer, reconstruct)
    return session.call(loss), session.call(loss, [splice])
