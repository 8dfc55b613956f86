"""The end-to-end demo: uniform policies on the MNIST-1D CNN at ~50 %, 25 % and 10 % of its FLOPs.

Three families of uniform policy — prune only, low-rank only, and prune + low-rank with
4-bit weights (8-bit activations) — are each set (by a search over their single knob,
using the analytic ``space.cost``) to the FLOPs targets; each compressed model is
BN-recalibrated, measured, fine-tuned briefly and measured again; every model is
exported to ONNX (outputs checked against PyTorch) and timed with ONNX Runtime side by
side with the original.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rich.console import Console

from autocompress.evaluate import EvalResult, Evaluator
from autocompress.export import compare_latency, export_onnx
from autocompress.policy import Policy
from autocompress.report import results_table
from autocompress.space import SearchSpace
from autocompress.zoo import load_zoo

TARGETS = (0.5, 0.25, 0.10)


def _prune(x: float) -> dict:
    return {"prune": x}


def _lowrank(x: float) -> dict:
    return {"rank": max(1.0 - x, 1 / 64)}


def _mixed(x: float) -> dict:
    return {"prune": x / 2, "rank": max(1.0 - x, 1 / 64) if x > 0 else 1.0, "weight_bits": 4, "act_bits": 8}


FAMILIES: dict[str, Callable[[float], dict]] = {"prune": _prune, "low-rank": _lowrank, "prune+low-rank+w4a8": _mixed}


def uniform_for_target(space: SearchSpace, family: Callable[[float], dict], flops_ratio: float) -> Policy:
    """The uniform policy of ``family`` whose FLOPs ratio is closest to ``flops_ratio``."""
    base = space.cost(Policy()).flops
    best, best_gap = Policy.uniform(space), float("inf")
    for x in np.linspace(0.0, 0.95, 191):
        policy = Policy.uniform(space, **family(float(x)))
        gap = abs(space.cost(policy).flops / base - flops_ratio)
        if gap < best_gap:
            best, best_gap = policy, gap
    return best


def run_demo(
    out_dir: str | Path = "runs/demo",
    *,
    zoo: str = "mnist1d-cnn",
    finetune_epochs: float = 1.0,
    seed: int = 0,
    threads: int = 1,
    latency_batch: int = 32,
    console: Console | None = None,
) -> list[dict]:
    """Run the demo, print its table, write ``results.json`` and the ONNX files to ``out_dir``."""
    console = console or Console()
    out_dir = Path(out_dir)
    (out_dir / "onnx").mkdir(parents=True, exist_ok=True)
    console.print(f"[bold]autocompress demo[/bold]: {zoo}, uniform policies at {', '.join(f'{t:.0%}' for t in TARGETS)} of FLOPs")
    entry = load_zoo(zoo, pretrained=True, seed=seed, progress=True)
    model, task = entry.model, entry.task
    space = SearchSpace.from_model(model, entry.example_input)
    evaluator = Evaluator(task, finetune_epochs=finetune_epochs, split="test", seed=seed, progress=False)

    measure_only = Evaluator(task, split="test", seed=seed)
    labelled: list[tuple[str, EvalResult]] = [("original", measure_only.evaluate(model, Policy.uniform(space), space=space))]
    jobs = [(name, target) for name in FAMILIES for target in TARGETS]
    with console.status("") as status:
        for i, (name, target) in enumerate(jobs, 1):
            status.update(f"evaluating {name} @ {target:.0%} FLOPs ({i}/{len(jobs)}): apply, recalibrate, fine-tune")
            policy = uniform_for_target(space, FAMILIES[name], target)
            labelled.append((f"{name} @{target:.0%}", evaluator.evaluate(model, policy, space=space)))

        status.update("exporting to ONNX (outputs checked against PyTorch)")
        example = task.test[0][:latency_batch].clone() if task.test is not None else task.example_input(latency_batch)
        paths = {}
        for label, result in labelled:
            slug = label.replace(" ", "_").replace("@", "").replace("%", "pct").replace("+", "_")
            paths[label] = export_onnx(result.model, out_dir / "onnx" / f"{slug}.onnx", example)
        status.update(f"timing {len(paths)} models side by side in ONNX Runtime ({threads} thread)")
        latency = compare_latency(paths, example, threads=threads, warmup=20, repeats=50, rounds=5)

    base_ms = latency["original"].median_ms
    rows, records = [], []
    for label, result in labelled:
        ms = latency[label].median_ms
        rows.append((label, result, {"ORT ms": f"{ms:.3f}", "speed-up": f"{base_ms / ms:.2f}×"}))
        records.append({"label": label, **result.to_dict(), "ort_latency_ms": ms, "ort_p10_ms": latency[label].p10_ms, "ort_p90_ms": latency[label].p90_ms})
    title = f"{zoo}: {task.metric_name} on the test split; ORT latency for a batch of {latency_batch}, {threads} thread, median"
    console.print(results_table(rows, extra=("ORT ms", "speed-up"), title=title))
    meta = {"zoo": zoo, "seed": seed, "finetune_epochs": finetune_epochs, "threads": threads, "latency_batch": latency_batch}
    (out_dir / "results.json").write_text(json.dumps({"meta": meta, "rows": records}, indent=2))
    console.print(f"results: {out_dir / 'results.json'}; ONNX files: {out_dir / 'onnx'}")
    return records
