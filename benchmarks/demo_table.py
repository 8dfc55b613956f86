"""Reproduce the README's demo table: uniform policies on the MNIST-1D CNN at ~50/25/10 % FLOPs.

    python benchmarks/demo_table.py            # seed 0, 1 ORT thread, writes benchmarks/results/demo.{json,md}

Accuracy is on the MNIST-1D test split (4,000 samples) before and after a 1-epoch fine-tune;
latency is ONNX Runtime on the CPU, a batch of 32, every model timed side by side in one run
(5 interleaved rounds of 50 runs after 20 warm-up runs), median.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import onnxruntime
import torch

from autocompress.demo import run_demo
from autocompress.report import human

RESULTS = Path(__file__).parent / "results"


def markdown(records: list[dict], meta: dict) -> str:
    lines = [
        f"Machine: {meta['machine']}; date {meta['date']}; seed {meta['seed']}; torch {meta['torch']}, "
        f"onnxruntime {meta['onnxruntime']}; command `{meta['command']}`.",
        "",
        "| policy | FLOPs % | params | FLOPs | BitOps | acc. before FT | acc. after FT | ORT ms (batch 32) | speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = records[0]["ort_latency_ms"]
    for r in records:
        after = "–" if r["metric_after_finetune"] is None else f"{r['metric_after_finetune']:.2f}"
        lines.append(
            f"| {r['label']} | {100 * r['ratios']['flops']:.1f} | {human(r['cost']['params'])} | {human(r['cost']['flops'])} "
            f"| {human(r['cost']['bitops'])} | {r['metric_before_finetune']:.2f} | {after} | {r['ort_latency_ms']:.3f} "
            f"| {base / r['ort_latency_ms']:.2f}× |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/demo-benchmark"))
    args = parser.parse_args()
    start = time.perf_counter()
    records = run_demo(args.out, seed=args.seed, threads=args.threads)
    meta = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, {platform.processor() or 'cpu'}",
        "date": time.strftime("%Y-%m-%d"),
        "seed": args.seed,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "command": f"python benchmarks/demo_table.py --seed {args.seed} --threads {args.threads}",
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "demo.json").write_text(json.dumps({"meta": meta, "rows": records}, indent=2))
    (RESULTS / "demo.md").write_text(markdown(records, meta))
    print(f"wrote {RESULTS / 'demo.md'} ({meta['wall_seconds']} s)")


if __name__ == "__main__":
    main()
