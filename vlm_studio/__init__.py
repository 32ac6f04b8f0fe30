"""vlm-studio's public Python API: what notebooks and scripts use.

One small module on purpose. The studio's own packages (``studio``, ``probes``, ``views``)
are organised for the app and may move; this façade is the stable surface, it is what an
exported notebook imports (so a notebook keeps working while the internals change), and its
name cannot collide with a user's own ``views`` or ``studio`` module.

Load a session, run any registered probe by name, decode with a strategy, steer, clamp, and
turn a result into the studio's figures::

    import vlm_studio as vs

    session = vs.load()                                   # the embedded world model
    lens = vs.run(session, "logit_lens", "scene.png", "describe the image .")
    for name, figure in vs.figures(lens, vs.image_array("scene.png")).items():
        figure.show()

    vcd = vs.decode(session, "scene.png", "describe the image .", method="vcd", alpha=1.0)
    print(vcd.baseline_text, "->", vcd.text)
    steered = vs.steer(session, "scene.png", "the circle is red . what color is the circle ?", alpha=1.0)

Every result is a dataclass of numpy arrays and plain values with ``save``/``load`` (JSON +
``.npz``) and ``to_dict``; :func:`probes` lists what :func:`run` accepts.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from probes import REGISTRY, ProbeRequest, ProbeResult, get_probe
from studio.engine.images import ImageLike, load_image
from studio.engine.session import ModelSession
from studio.sharing.environment import Environment, check, record
from studio.sharing.export import comparison, differences, differing_runs, digest, export_runs
from studio.world.anchors import register as _register_world_anchors
from views.registry import figures

_register_world_anchors()  # the world renderer: the anchors method's text-to-image model for world models

__all__ = ["Environment", "ModelSession", "ProbeResult", "check_environment", "clamp", "comparison", "decode", "differences",
           "differing_runs", "digest", "environment", "export", "figures", "image_array", "load", "load_result", "probes",
           "run", "steer"]


def load(model: str | None = None, **options) -> ModelSession:
    """A model session: the embedded model (``None`` or ``"embedded"``), a local folder or a Hub id.

    Options: ``device`` ("auto", "cuda", "mps", "cpu"), ``dtype`` ("auto", "bf16", "fp16",
    "fp32"), ``trust_remote_code`` (off unless asked), ``offline``.

    >>> session = load()                      # doctest: +SKIP
    >>> session.n_layers                      # doctest: +SKIP
    4
    """
    return ModelSession.load(model, **options)


def probes() -> dict[str, str]:
    """Registered probe names and what each computes (what :func:`run` accepts)."""
    return {name: probe.description for name, probe in REGISTRY.items()}


def run(session: ModelSession, probe: str, image: ImageLike | None, prompt: str, max_new_tokens: int = 48,
        **params) -> ProbeResult:
    """Run probe ``probe`` on (image, prompt), answered greedily with up to ``max_new_tokens``;
    ``params`` are the probe's parameters, validated (unknown names are an error).

    >>> run(session, "attribution", "scene.png", "describe the image .", answer_index=2)  # doctest: +SKIP
    """
    chosen = get_probe(probe)
    return chosen.run(session, ProbeRequest(image, prompt, int(max_new_tokens)), chosen.params(**params))


def decode(session: ModelSession, image: ImageLike | None, prompt: str, method: str = "greedy",
           max_new_tokens: int = 48, **settings) -> ProbeResult:
    """The answer under a decoding method ("greedy", "vcd", "sid", "icd", "sampling") with its
    settings (e.g. ``alpha=1.0, noise_step=500``), next to the greedy answer.

    >>> decode(session, "scene.png", "describe the image .", method="sid", layer=2).text  # doctest: +SKIP
    """
    return run(session, "decode", image, prompt, max_new_tokens, method=method, settings=settings)


def steer(session: ModelSession, image: ImageLike | None, prompt: str, alpha: float, layers: tuple = (),
          directions: str = "", max_new_tokens: int = 48) -> ProbeResult:
    """The answer with ``alpha`` × the fit's steering vector (trained toward the image, or the
    mean preference direction) added at ``layers`` (default: the fit's layers); ``directions``
    is a ``vlm-studio steer fit`` folder (default: shipped)."""
    return run(session, "steer", image, prompt, max_new_tokens, alpha=alpha, layers=tuple(layers),
               directions=str(directions))


def clamp(session: ModelSession, image: ImageLike | None, prompt: str, feature: int, value: float,
          where: str = "image", dictionary: str = "", max_new_tokens: int = 48) -> ProbeResult:
    """The answer with concept-dictionary ``feature`` clamped to ``value`` at the image positions
    (``where="image"``) or everywhere (``"all"``); ``dictionary`` defaults to the shipped one."""
    return run(session, "clamp", image, prompt, max_new_tokens, feature=feature, value=value, where=where,
               dictionary=str(dictionary))


def image_array(image: ImageLike | None) -> np.ndarray | None:
    """An image as the RGB array the figures draw over (None stays None)."""
    return None if image is None else np.asarray(load_image(image))


def load_result(stem: str | Path) -> ProbeResult:
    """A result saved with ``result.save(stem)`` (``stem.json`` + ``stem.npz``)."""
    return ProbeResult.load(stem)


def environment(session: ModelSession | None = None) -> Environment:
    """What numbers computed here depend on: the studio's version and commit, Python, torch,
    transformers and the other key libraries, and ``session``'s device, dtype, model source and
    fingerprint (what exports record in ``request.json``)."""
    return record(session)


def check_environment(recorded: dict, session: ModelSession) -> list[str]:
    """Compare this environment with one an export ``recorded``: print a warning naming every
    difference (versions, device, dtype, another model), never raise; the differences."""
    return check(recorded, session)


def export(out_dir: str | Path, session: ModelSession, image: ImageLike | None, prompt: str, runs: list[dict],
           max_new_tokens: int = 48, force: bool = False) -> Path:
    """Run ``runs`` (``[{"probe": name, "params": {...}}, ...]``) and write a folder with a
    notebook that re-runs them, the image, the results and standalone HTML figures.

    >>> export("out", session, "scene.png", "describe the image .", [{"probe": "drift", "params": {}}])  # doctest: +SKIP
    """
    return export_runs(out_dir, session, image, prompt, runs, max_new_tokens, force=force)
