"""Shared fixtures. Tests never touch the network: the Hub is forced offline here."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def embedded():
    """The shipped world model, loaded once."""
    from studio.session import ModelSession
    return ModelSession.load(None, device="cpu")


@pytest.fixture(scope="session")
def untrained_world():
    """A freshly initialised (untrained) world model: same architecture and processor, fast to build."""
    from studio.session import ModelSession
    from studio.world.modelkit import WorldModelSize, build_model, build_processor
    processor = build_processor()
    model = build_model(processor.tokenizer, WorldModelSize(64, 1, 2, 128, 64, 2, 2, 128), seed=3)
    return ModelSession(model, processor)
