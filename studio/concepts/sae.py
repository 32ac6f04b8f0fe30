"""Sparse autoencoders over the collected activations, trained and saved with ``sae-lens``.

We use sae-lens' own TopK SAE classes, its ``SAETrainer`` (the training loop inside its
runners, with its learning-rate schedule, dead-feature tracking and activation-norm scaling)
and its save format (``sae_weights.safetensors`` + ``cfg.json``). We do not use
``LanguageModelSAETrainingRunner``: it draws activations from a TransformerLens model over a
text dataset, which cannot express a VLM's image-patch positions; the trainer accepts any
iterator of activation batches, so our on-disk set (:mod:`studio.concepts.activations`) feeds
it directly.

TopK (Gao et al. 2024, "Scaling and evaluating sparse autoencoders") rather than L1: the
sparsity is fixed by ``k`` instead of tuned through a penalty, and its auxiliary loss keeps
features alive, which matters on a short CPU budget.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from studio.concepts.activations import ActivationSet, model_fingerprint
from studio.engine.errors import InputError
from studio.engine.files import building_dir


@dataclass(frozen=True)
class DictionaryConfig:
    """SAE width and sparsity, and the training budget; defaults make the shipped dictionary."""

    d_sae: int = 512
    k: int = 24
    steps: int = 3000
    batch: int = 256
    lr: float = 5e-4
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.k < self.d_sae:
            raise InputError(f"k must be between 1 and d_sae - 1 ({self.d_sae - 1}); got {self.k}")
        if self.steps < 1 or self.batch < 1 or self.lr <= 0:
            raise InputError("steps and batch must be at least 1 and lr positive")


def train_sae(acts: ActivationSet, config: DictionaryConfig, device: str = "cpu"):
    """Train a TopK SAE on ``acts`` with sae-lens' trainer; returns the inference SAE."""
    from sae_lens import SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig

    torch.manual_seed(config.seed)
    sae_cfg = TopKTrainingSAEConfig(d_in=acts.d_model, d_sae=config.d_sae, k=config.k, device=device,
                                    dtype="float32", normalize_activations="expected_average_only_in")
    sae_cfg.metadata.model_name = acts.meta["model"]
    sae_cfg.metadata.hook_name = f"decoder_layers.{acts.layer}"
    sae = TopKTrainingSAE(sae_cfg)
    trainer_cfg = SAETrainerConfig(
        total_training_samples=config.steps * config.batch, train_batch_size_samples=config.batch,
        lr=config.lr, lr_end=config.lr / 10, lr_warm_up_steps=min(100, config.steps // 10),
        lr_decay_steps=config.steps // 5,
        device=device, dead_feature_window=max(1, config.steps // 4),
        feature_sampling_window=max(1, config.steps // 4), n_batches_for_norm_estimate=50)
    trainer = SAETrainer(trainer_cfg, sae, data_provider=(b.to(device) for b in acts.batches(config.batch, config.seed)))
    trainer.fit()
    with tempfile.TemporaryDirectory() as tmp:
        trainer.sae.save_inference_model(tmp)
        return load_sae(tmp)


def save_sae(sae, folder: str | Path, extra: dict | None = None) -> Path:
    """Write the SAE (sae-lens format) and ``studio.json`` (our metadata) atomically."""
    import json
    out = Path(folder)
    with building_dir(out, force=True) as staging:
        sae.save_model(staging)
        (staging / "studio.json").write_text(json.dumps(extra or {}, indent=1))
    return out


def load_sae(folder: str | Path):
    """An inference SAE from a sae-lens folder (safetensors + cfg.json)."""
    from sae_lens import SAE
    path = Path(folder)
    if not (path / "cfg.json").is_file() or not (path / "sae_weights.safetensors").is_file():
        raise InputError(f"{path} is not a sae-lens dictionary (needs cfg.json and sae_weights.safetensors)")
    sae = SAE.load_from_disk(str(path))
    sae.eval()
    return sae


def check_matches(sae, session, layer: int | None = None) -> int:
    """The decoder layer the SAE reads; InputError if it was trained on another model or width."""
    hidden = session.adapter.final_norm().weight.shape[0]
    if sae.cfg.d_in != hidden:
        raise InputError(f"this dictionary reads width {sae.cfg.d_in}; the model's residual stream is {hidden}")
    trained_on = sae.cfg.metadata.model_name
    if trained_on and trained_on != model_fingerprint(session.model):
        raise InputError(f"this dictionary was trained on another model (fingerprint {trained_on}); "
                         f"this session's is {model_fingerprint(session.model)}")
    hook = sae.cfg.metadata.hook_name or ""
    trained_layer = int(hook.rsplit(".", 1)[-1]) if hook.startswith("decoder_layers.") else layer
    if trained_layer is None or not 0 <= trained_layer < session.n_layers:
        raise InputError(f"layer {trained_layer} is out of range: choose 0..{session.n_layers - 1}")
    return trained_layer
