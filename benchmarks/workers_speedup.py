"""Speed-up of `--workers 2` over 1 on this machine: the same search, timed side by side.

    python benchmarks/workers_speedup.py            # writes benchmarks/results/workers_speedup.{json,md}

Each repeat runs the same random search (same seed, so the same candidates) into a fresh
SQLite study with 1 worker and with 2 worker processes, alternating, and the median wall
time of each is reported with their ratio. A worker process gets cores // workers torch threads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from autocompress.search import search
from autocompress.zoo import load_zoo

RESULTS = Path(__file__).parent / "results"


def timed_search(zoo, workers: int, args: argparse.Namespace) -> float:
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        study = search(
            zoo.model, zoo.task, strategy="random", budget=args.budget, seed=args.seed, workers=workers,
            storage=Path(folder) / "s.db", evaluator={"finetune_steps": args.finetune_steps}, progress=False,
        )
        seconds = time.perf_counter() - start
        assert len(study.completed()) == args.budget
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zoo", default="mnist1d-cnn")
    parser.add_argument("--budget", type=int, default=16)
    parser.add_argument("--finetune-steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    zoo = load_zoo(args.zoo, pretrained=True, seed=args.seed)
    times: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.repeats):
        for workers in (1, 2):
            times[workers].append(timed_search(zoo, workers, args))
            print(f"workers={workers}: {times[workers][-1]:.1f} s")
    one, two = statistics.median(times[1]), statistics.median(times[2])
    meta = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
        "command": f"python benchmarks/workers_speedup.py --zoo {args.zoo} --budget {args.budget} "
        f"--finetune-steps {args.finetune_steps} --repeats {args.repeats} --seed {args.seed}",
    }
    result = {"meta": meta, "seconds": times, "median_1": one, "median_2": two, "speedup": one / two}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "workers_speedup.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "workers_speedup.md").write_text(
        f"{meta['machine']}; {meta['date']}; `{meta['command']}`\n\n"
        f"| workers | median wall time (s) | runs |\n|---:|---:|---|\n"
        f"| 1 | {one:.1f} | {', '.join(f'{t:.1f}' for t in times[1])} |\n"
        f"| 2 | {two:.1f} | {', '.join(f'{t:.1f}' for t in times[2])} |\n\n"
        f"Speed-up of 2 workers over 1: **{one / two:.2f}×**\n"
    )
    print(f"speed-up {one / two:.2f}x")


if __name__ == "__main__":
    main()
