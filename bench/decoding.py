"""Per-token cost of each decoding method relative to greedy, measured side by side in one run.

For each method: median seconds per generated token over several scenes (the same scenes for
every method), divided by greedy's; and the peak resident-memory growth during decoding
(Linux), as a ratio to greedy's when greedy's is large enough to measure (>= 1 MiB).

    python -m bench.decoding [--model embedded] [--methods greedy,vcd,sid,icd] [--scenes 12]
"""
from __future__ import annotations

import argparse
import statistics
import time

from bench.probes import peak_extra_bytes
from studio.decoding import strategy_by_name
from studio.engine.session import ModelSession
from studio.world.language import CAPTION_PROMPT
from studio.world.render import render
from studio.world.scenes import sample_scene


def per_token_seconds(session, prepared_list, strategy, max_new_tokens: int) -> float:
    times = []
    for prepared in prepared_list:
        start = time.perf_counter()
        generation = session.generate(prepared, max_new_tokens=max_new_tokens, strategy=strategy)
        times.append((time.perf_counter() - start) / max(1, len(generation.tokens) + 1))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--methods", default="greedy,vcd,sid,icd")
    parser.add_argument("--scenes", type=int, default=12)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    args = parser.parse_args()
    session = ModelSession.load(args.model, device="cpu")
    prepared = [session.prepare(render(sample_scene(i, "cooccur")), CAPTION_PROMPT) for i in range(args.scenes)]
    strategies = {name: strategy_by_name(name) for name in args.methods.split(",")}
    for strategy in strategies.values():
        session.generate(prepared[0], max_new_tokens=4, strategy=strategy)
    seconds = {n: per_token_seconds(session, prepared, s, args.max_new_tokens) for n, s in strategies.items()}
    memory = {n: peak_extra_bytes(lambda s=s: session.generate(prepared[0], args.max_new_tokens, s))
              for n, s in strategies.items()}
    base_t, base_m = seconds["greedy"], memory["greedy"]
    print(f"model {session.source}, {args.scenes} cooccur scenes, caption prompt, CPU")
    print(f"{'method':<8}{'ms/token':>10}{'x greedy':>10}{'peak extra MiB':>16}{'x greedy':>10}")
    for name in strategies:
        ratio = f"{memory[name] / base_m:.2f}" if base_m >= 2**20 else "n/a"  # below 1 MiB RSS is noise
        print(f"{name:<8}{seconds[name] * 1e3:>10.2f}{seconds[name] / base_t:>10.2f}"
              f"{memory[name] / 2**20:>16.2f}{ratio:>10}")


if __name__ == "__main__":
    main()
