"""APQ (issue 6) on MNIST-1D: the elastic supernet against the same architectures trained alone.

    python benchmarks/apq.py --threads 2                  # supernet section (the only one so far)

Section ``supernet``: an :class:`autocompress.elastic.ElasticCNN1d` (channels 32/64/128,
depth 1-3, width 0.5/0.75/1, kernel 3/5/7 per stage) trained once with the sandwich rule
(largest + smallest + ``--sandwich`` random sub-networks per step, in-place distillation) for
``--epochs``; then the largest, the smallest and ``--random`` random sub-networks are extracted
(BatchNorm statistics re-estimated) and their test accuracy compared with the same
architectures trained alone from scratch for the same number of epochs (Adam, cosine decay,
same seed). Parameters and MACs per sub-network are counted on the extracted model.

Not yet (issue 6): predictor transfer, the ``apq`` strategy, the staged pipeline comparison.
Writes benchmarks/results/apq.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from autocompress.cost import count_cost
from autocompress.elastic import ElasticCNN1d, subnet_metric, train_supernet
from autocompress.finetune import evaluate_metric, train
from autocompress.zoo import load_task

RESULTS = Path(__file__).parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=float, default=10.0)
    parser.add_argument("--sandwich", type=int, default=2)
    parser.add_argument("--random", type=int, default=2, help="random sub-networks compared besides the two ends")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "apq")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    task = load_task("mnist1d", seed=args.seed)
    torch.manual_seed(args.seed)
    supernet = ElasticCNN1d()
    start = time.perf_counter()
    stats = train_supernet(supernet, task, epochs=args.epochs, sandwich=args.sandwich, seed=args.seed)
    print(f"supernet trained: {stats}", flush=True)
    rng = np.random.default_rng(args.seed)
    configs = {"largest": supernet.largest(), "smallest": supernet.smallest()}
    configs.update({f"random {i + 1}": supernet.random(rng) for i in range(args.random)})
    rows = []
    for label, config in configs.items():
        inherited, model = subnet_metric(supernet, config, task, "test", seed=args.seed)
        alone = ElasticCNN1d()
        torch.manual_seed(args.seed)
        standalone = alone.extract(config)
        for module in standalone.modules():  # fresh initialization of the same architecture
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        train_stats = train(standalone, task, epochs=args.epochs, lr=3e-3, seed=args.seed)
        cost = count_cost(model, task.example_input(1))
        rows.append({"subnet": label, "config": [vars(s) for s in config.stages], "params": cost.params,
                     "macs": cost.macs, "inherited": inherited, "alone": evaluate_metric(standalone, task, "test"),
                     "alone_seconds": train_stats["seconds"]})
        print(f"{label}: inherited {inherited:.2f}, trained alone {rows[-1]['alone']:.2f}", flush=True)
    result = {"command": "python benchmarks/apq.py " + shlex.join(sys.argv[1:] if argv is None else argv),
              "date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
              f"{args.threads} torch threads, load average {os.getloadavg()[0]:.1f}", "torch": torch.__version__,
              "settings": {k: str(v) for k, v in vars(args).items()}, "supernet": stats, "rows": rows,
              "seconds": time.perf_counter() - start}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    lines = ["# APQ on MNIST-1D: elastic supernet vs the same architectures trained alone", "",
             f"Command `{result['command']}`; {result['date']}; {result['machine']}; torch {result['torch']}; seed "
             f"{args.seed}; {result['seconds']:.0f} s.", "",
             f"Supernet (channels 32/64/128, depth 1–3, width 0.5/0.75/1, kernel 3/5/7 per stage) trained once for "
             f"{args.epochs:g} epochs with the sandwich rule (largest + smallest + {args.sandwich} random per step, "
             f"in-place distillation): {stats['seconds']:.0f} s. Sub-networks extracted with their inherited weights "
             f"(BatchNorm re-estimated on 20 training batches) vs the same architecture trained alone for "
             f"{args.epochs:g} epochs (Adam 3e-3, cosine). Test accuracy, %:", "",
             "| sub-network | (depth, width, kernel) per stage | params | MACs | inherited from the supernet | trained alone |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        arch = " · ".join(f"({s['depth']}, {s['width']:g}, {s['kernel']})" for s in r["config"])
        lines.append(f"| {r['subnet']} | {arch} | {r['params']:,} | {r['macs']:,} | {r['inherited']:.2f} | {r['alone']:.2f} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
