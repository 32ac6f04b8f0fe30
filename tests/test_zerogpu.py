"""ZeroGPU: with a stand-in `spaces` package reporting ZeroGPU, every forward of every module of
the model (probes, interventions, decoding methods, batched answers) runs inside a spaces.GPU
function, entered through ModelSession.call; without ZeroGPU the stand-in is never called."""
import sys
import types

import pytest

import vlm_studio as vs
from probes import REGISTRY
from studio.decoding import strategy_by_name
from studio.engine import zerogpu
from studio.engine.session import ModelSession
from studio.world.samples import load_samples

PROMPT = "describe the image ."


class StandInSpaces:
    """What the studio uses of `spaces`: ``GPU(fn)`` and ``config.Config.zero_gpu``; it counts the
    calls of GPU functions and how deep inside them the current code runs."""

    def __init__(self, zero_gpu: bool) -> None:
        self.module = types.ModuleType("spaces")
        self.module.GPU = self.gpu
        self.config = types.ModuleType("spaces.config")
        self.config.Config = types.SimpleNamespace(zero_gpu=zero_gpu)
        self.module.config = self.config
        self.depth = self.calls = 0

    def gpu(self, fn):
        def inside(*args, **kwargs):
            self.depth += 1
            self.calls += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self.depth -= 1
        return inside


@pytest.fixture()
def spaces(monkeypatch):
    def install(zero_gpu: bool) -> StandInSpaces:
        stand_in = StandInSpaces(zero_gpu)
        monkeypatch.setitem(sys.modules, "spaces", stand_in.module)
        monkeypatch.setitem(sys.modules, "spaces.config", stand_in.config)
        return stand_in
    return install


@pytest.fixture(scope="module")
def session():
    return ModelSession.load(None, device="cpu")


def watch(model, stand_in: StandInSpaces) -> tuple[list[str], list[str], list]:
    """Pre-hooks on every module of ``model``: the names of those run inside and outside a GPU function."""
    inside: list[str] = []
    outside: list[str] = []

    def hook(name):
        return lambda module, args: (inside if stand_in.depth > 0 else outside).append(name)
    handles = [module.register_forward_pre_hook(hook(name or "model")) for name, module in model.named_modules()]
    return inside, outside, handles


def test_every_model_forward_runs_inside_a_gpu_function(spaces, session):
    stand_in = spaces(zero_gpu=True)
    assert zerogpu.active()
    image = str(load_samples()[1].path)
    inside, outside, handles = watch(session.model, stand_in)
    try:
        for name in REGISTRY:
            vs.run(session, name, image, PROMPT, 6)
        vs.decode(session, image, PROMPT, method="vcd", max_new_tokens=6)
        session.answer_batch([image, image], [PROMPT, "what color is the circle ?"], 6, strategy_by_name("icd"))
    finally:
        for handle in handles:
            handle.remove()
    assert not outside, f"forwards outside a spaces.GPU function: {sorted(set(outside))}"
    assert "model" in inside and stand_in.calls >= len(REGISTRY) + 2 and stand_in.depth == 0


def test_without_zero_gpu_the_calls_run_directly(spaces, session, monkeypatch):
    stand_in = spaces(zero_gpu=False)
    assert not zerogpu.active()
    vs.run(session, "drift", str(load_samples()[0].path), PROMPT, 4)
    assert stand_in.calls == 0
    monkeypatch.setitem(sys.modules, "spaces.config", None)  # `spaces` not installed: its import fails
    assert not zerogpu.active() and zerogpu.on_gpu(lambda: 7) == 7
