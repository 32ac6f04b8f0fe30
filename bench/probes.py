"""Probe costs measured side by side in one run, as ratios to a plain forward pass.

Prints: full logit-lens sweep / one plain forward; attention capture / plain forward; peak
extra memory of the sweep (resident set growth, Linux) as a fraction of the model's weights;
and the Inspect tab's panel refresh from cached results.

    python -m bench.probes [--model embedded] [--repeats 20]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from probes import ProbeRequest, run_probe
from probes.logit_lens import sweep
from probes.runs import get_run
from studio.engine.session import ModelSession
from studio.ui import inspect_tab
from studio.world.language import CAPTION_PROMPT
from studio.world.render import render
from studio.world.scenes import sample_scene


def median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_extra_bytes(fn) -> int:
    """Growth of peak resident memory while ``fn`` runs (resets the peak via clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")
    before = _status("VmRSS:")
    fn()
    return _status("VmHWM:") - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    session = ModelSession.load(args.model, device="cpu")
    request = ProbeRequest(render(sample_scene(3, "cooccur")), CAPTION_PROMPT, 40)
    run = get_run(session, request)
    inputs = session.extend_inputs(run.prepared.inputs, run.token_map.input_ids[run.prepared.length:])
    targets = torch.tensor(sorted(set(run.token_map.input_ids[p] for p in run.answer_positions)))

    def plain():
        with torch.inference_mode():
            session.model(**inputs)

    forward = median_seconds(plain, args.repeats)
    lens = median_seconds(lambda: sweep(session, run.hidden, targets, 5, 256), args.repeats)
    attention = median_seconds(lambda: run_probe(session, "attention", request), args.repeats)
    weights = sum(p.numel() * p.element_size() for p in session.model.parameters())
    extra = peak_extra_bytes(lambda: sweep(session, run.hidden, targets, 5, 256))

    *_, panels = inspect_tab.inspect(session, request.image, request.prompt, request.max_new_tokens,
                                     progress=lambda *a, **k: None)  # a generator: its last yield is the panels
    state = panels["state"]
    layer = state.lens.answer_probs.shape[0] // 2
    refresh = median_seconds(lambda: inspect_tab.show_token(state, 1, layer), args.repeats)
    patch = median_seconds(lambda: inspect_tab.show_patch(state, 1, 20.0, 20.0), args.repeats)

    layers, seq, _ = run.hidden.shape
    print(f"model {session.source}: {layers} layers, {seq} positions, vocab {session.adapter.unembedding().out_features}")
    print(f"plain forward (prompt + answer)      {forward * 1e3:8.2f} ms")
    print(f"logit-lens sweep / plain forward     {lens / forward:8.2f} x   (goal <= 1.5)")
    print(f"attention capture / plain forward    {attention / forward:8.2f} x")
    print(f"sweep peak extra memory / weights    {extra / weights:8.2f}     "
          f"({extra / 2**20:.1f} MiB of {weights / 2**20:.1f} MiB)")
    print(f"panel refresh from cache (token)     {refresh * 1e3:8.1f} ms")
    print(f"panel refresh from cache (patch)     {patch * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
