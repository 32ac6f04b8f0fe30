"""Interpretability probes behind one interface, and the registry every front end enumerates.

The app, the CLI (``vlm-studio probe NAME ...``) and notebook export list probes from
:data:`REGISTRY`, so a probe added here appears everywhere at once.
"""
from __future__ import annotations

from probes.alignment import Alignment
from probes.answers import Clamp, Decode, Steer
from probes.attention import Attention
from probes.attribution import Attribution
from probes.base import Probe, ProbeParams, ProbeRequest, ProbeResult
from probes.detector import Detector
from probes.drift import Drift
from probes.eos import Eos
from probes.heads import SparseAttentionVectors
from probes.logit_lens import LogitLens
from probes.relevancy import Relevancy
from studio.engine.errors import InputError

REGISTRY: dict[str, Probe] = {p.name: p for p in (LogitLens(), Attention(), Attribution(), Drift(), Detector(),
                                                     Decode(), Steer(), Clamp(), Eos(), Alignment(), Relevancy(),
                                                     SparseAttentionVectors())}


def get_probe(name: str) -> Probe:
    try:
        return REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown probe {name!r}; choose one of {', '.join(REGISTRY)}") from None


def run_probe(session, name: str, request: ProbeRequest, **params) -> ProbeResult:
    """Run a registered probe by name with keyword parameters (validated)."""
    probe = get_probe(name)
    return probe.run(session, request, probe.params(**params))


__all__ = ["REGISTRY", "Probe", "ProbeParams", "ProbeRequest", "ProbeResult", "get_probe", "run_probe"]
