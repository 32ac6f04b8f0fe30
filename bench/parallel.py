"""Wall time of a data-parallel ``world eval`` against one process, measured side by side in one run.

Runs ``vlm-studio world eval --methods ...`` once as one process with ``--threads`` torch threads
and once under ``torchrun`` with ``--processes`` processes of one thread each (same scenes,
fresh parts folders), prints both wall times, their ratio, and whether the two JSON reports
are byte-identical.

    python -m bench.parallel [--n 40] [--methods greedy,vcd] [--processes 2] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def timed(command: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="scenes of the cooccur split")
    parser.add_argument("--methods", default="greedy,vcd")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the one-process run")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        eval_args = ["world", "eval", "--splits", "cooccur", "--n", str(args.n), "--methods", args.methods]
        one = timed([str(BIN / "vlm-studio"), *eval_args, "--json", str(out / "one.json")], args.threads)
        many = timed([str(BIN / "torchrun"), "--nproc-per-node", str(args.processes), "--no-python", "--",
                      str(BIN / "vlm-studio"), *eval_args, "--json", str(out / "many.json")], 1)
        same = (out / "one.json").read_bytes() == (out / "many.json").read_bytes()
    print(f"world eval, {args.n} cooccur scenes, methods {args.methods}")
    print(f"1 process x {args.threads} threads: {one:.1f} s;  {args.processes} processes x 1 thread: {many:.1f} s;  "
          f"ratio {many / one:.2f} (parallel / single); reports identical: {same}")


if __name__ == "__main__":
    main()
