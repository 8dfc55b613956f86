"""Hardware-aware compression on the zoo CNNs: lookup-table latency, layer-targeted low rank, int8.

    python benchmarks/hardware.py                                  # every section, ort-cpu 1 thread, batch 32
    python benchmarks/hardware.py --sections estimator --models mnist1d-cnn --policies 10   # quick

Sections (``--sections``):

- ``estimator``: per zoo CNN, ``--policies`` random prune + low-rank policies (seeded); each
  model's latency estimated from the per-layer lookup table
  (:class:`autocompress.hardware.lut.LatencyTable`, overhead calibrated on the original)
  and measured whole on the target; relative error, median over the policies.
- ``lowrank``: per decomposable layer, the table latency of the original layer and of its
  factorizations at rank ratios 0.75 / 0.5 / 0.25 (ranks multiples of 8); then, per ratio,
  the three rules of :func:`autocompress.search.strategies.targeted_lowrank.targeted_policy` ("all",
  "flops", "measured") applied, each fine-tuned the same ``--finetune-epochs`` (same seed),
  measured: test metric, whole-model latency side by side in one round-robin
  (:func:`autocompress.export.compare_latency`, with the original), speed-up.
  Sequential freezing: the "all" model at ratio 0.5 fine-tuned jointly vs with
  alternately frozen factors (:func:`autocompress.transforms.freezing.alternate_factors`),
  same steps and seed: training steps per second (median of ``--repeats`` runs) and test
  metric.
- ``int8``: ``benchmarks/hardware_int8.py``'s section when present (static QDQ int8 vs fp32).

``--cuda``: also whole-model latency of the lowrank section's models on ``torch-cuda``
(CUDA events) when a GPU is present.

Writes benchmarks/results/hardware.{json,md} (``--out``) with the target, machine and command.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autocompress import Policy, SearchSpace, apply_policy
from autocompress.export import batched, compare_latency, export_onnx
from autocompress.finetune import evaluate_metric, train
from autocompress.hardware.lut import LatencyTable
from autocompress.hardware.targeted_lowrank import lowrank_gains, verify_faster
from autocompress.hardware.targets import measure, parse_target
from autocompress.search.strategies.targeted_lowrank import RULES, targeted_policy
from autocompress.transforms.freezing import alternate_factors, unfreeze_factors
from autocompress.zoo import load_zoo

RESULTS = Path(__file__).parent / "results"
MODELS = ("mnist1d-cnn", "digits-cnn", "mnist1d-resnet")
RATIOS = (0.75, 0.5, 0.25)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", default=["estimator", "lowrank", "int8"],
                        choices=["estimator", "lowrank", "int8"])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--target", default="ort-cpu:threads=1,batch=32,repeats=50")
    parser.add_argument("--policies", type=int, default=30, help="random policies for the estimator error")
    parser.add_argument("--calibration", type=int, default=8, help="derived models measured to calibrate the estimator")
    parser.add_argument("--finetune-epochs", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the training-throughput runs")
    parser.add_argument("--rounds", type=int, default=5, help="round-robin rounds of the side-by-side latency")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cuda", action="store_true", help="also time on torch-cuda when a GPU is present")
    parser.add_argument("--out", type=Path, default=RESULTS / "hardware")
    return parser.parse_args(argv)


def log(message: str) -> None:
    print(message, flush=True)


# ------------------------------------------------------------------ estimator
def estimator_section(name: str, table: LatencyTable, args: argparse.Namespace) -> dict[str, Any]:
    entry = load_zoo(name, seed=args.seed)
    space = SearchSpace.from_model(entry.model, entry.example_input, methods=["prune", "lowrank"], rank_multiple=8)
    calibration_rng = np.random.default_rng(args.seed + 1000)  # other policies than the ones scored
    derived = [apply_policy(entry.model, space.random_policy(calibration_rng), space=space)
               for _ in range(args.calibration)]
    coefficients = table.calibrate(entry.model, entry.example_input, derived)
    rng = np.random.default_rng(args.seed)
    rows = []
    for index in range(args.policies):
        policy = space.random_policy(rng)
        model = apply_policy(entry.model, policy, space=space)
        estimate = table.estimate(model, entry.example_input, original=entry.model).total_ms
        measured = measure(model, entry.example_input, table.target).median_ms
        rows.append({"policy": index, "estimate_ms": estimate, "measured_ms": measured,
                     "error": estimate / measured - 1, "macs_ratio": space.cost(policy).macs / space.cost(Policy()).macs})
    errors = [abs(r["error"]) for r in rows]
    log(f"{name}: estimator median |error| {100 * statistics.median(errors):.1f} % over {len(rows)} policies")
    return {"model": name, "rows": rows, "median_abs_error": statistics.median(errors), "calibration": coefficients,
            "p90_abs_error": float(np.percentile(errors, 90)), "layer_configs": len(table.entries)}


# ------------------------------------------------------------------ layer-targeted low rank
def lowrank_section(name: str, table: LatencyTable, args: argparse.Namespace) -> dict[str, Any]:
    entry = load_zoo(name, seed=args.seed)
    space = SearchSpace.from_model(entry.model, entry.example_input, methods=["lowrank"], rank_multiple=8)
    gains = lowrank_gains(entry.model, entry.example_input, space, table, RATIOS)
    layers = [{"layer": g.name, "original_ms": g.original_ms, "original_macs": g.original_macs,
               "options": [{"ratio": o.ratio, "ranks": list(o.ranks), "ms": o.ms, "macs": o.macs,
                            "speedup": o.speedup(g.original_ms)} for o in g.options]} for g in gains]
    models: dict[str, torch.nn.Module] = {"original": entry.model}
    arms = []
    for ratio in RATIOS:
        seen: dict[str, str] = {}
        for rule in RULES:
            policy = targeted_policy(space, gains, rule, ratio)
            checks = None
            if rule == "measured" and policy.layers and table.target.runtime == "ort-cpu":
                policy, checks = verify_faster(entry.model, entry.example_input, space, policy, gains, table.target)
            key = policy.to_json()
            label = f"{rule}@{ratio:g}"
            if key in seen:  # the same policy as another rule: reuse its model and numbers
                arms.append({"arm": label, "ratio": ratio, "rule": rule, "same_as": seen[key],
                             "layers": {k: v.rank for k, v in policy.layers.items()}})
                continue
            seen[key] = label
            model = apply_policy(entry.model, policy, space=space)
            before = evaluate_metric(model, entry.task, "test")
            if policy.layers:
                train(model, entry.task, epochs=args.finetune_epochs, seed=args.seed)
            models[label] = model
            arms.append({"arm": label, "ratio": ratio, "rule": rule, "layers": {k: v.rank for k, v in policy.layers.items()},
                         "checks": checks,
                         "metric_before_finetune": before, "metric": evaluate_metric(model, entry.task, "test"),
                         "macs_ratio": space.cost(policy).macs / space.cost(Policy()).macs})
    latency = side_by_side(models, entry.example_input, table.target, args)
    original_ms = latency["original"]["median_ms"]
    original_metric = evaluate_metric(entry.model, entry.task, "test")
    for arm in arms:
        source = arm.get("same_as", arm["arm"])
        twin = next(a for a in arms if a["arm"] == source)
        for key in ("metric", "metric_before_finetune", "macs_ratio"):
            arm[key] = twin[key]
        arm["latency"] = latency[source]
        arm["speedup"] = original_ms / latency[source]["median_ms"]
    cuda = cuda_latency(models, entry.example_input, table.target) if args.cuda else None
    freezing = freezing_section(entry, space, args)
    log(f"{name}: " + ", ".join(f"{a['arm']} {a['speedup']:.2f}x {a['metric']:.2f}" for a in arms))
    return {"model": name, "metric_name": entry.task.metric_name, "original_metric": original_metric,
            "original_latency": latency["original"], "layers": layers, "arms": arms, "cuda": cuda, "freezing": freezing}


def side_by_side(models: dict[str, torch.nn.Module], example: torch.Tensor, target, args) -> dict[str, dict]:
    inputs = batched(example, target.batch)
    with tempfile.TemporaryDirectory() as folder:
        paths = {label: export_onnx(m, Path(folder) / f"{i}.onnx", inputs, check=False)
                 for i, (label, m) in enumerate(models.items())}
        results = compare_latency(paths, inputs, threads=target.threads, warmup=target.warmup,
                                  repeats=target.repeats, rounds=args.rounds)
    return {label: {"median_ms": r.median_ms, "p10_ms": r.p10_ms, "p90_ms": r.p90_ms, "samples": r.repeats}
            for label, r in results.items()}


def cuda_latency(models: dict[str, torch.nn.Module], example: torch.Tensor, target) -> dict[str, dict] | None:
    if not torch.cuda.is_available():
        return None
    cuda = parse_target(f"torch-cuda:batch={target.batch},repeats=100,warmup=20")
    out = {}
    for label, model in models.items():
        r = measure(model, example, cuda)
        out[label] = {"median_ms": r.median_ms, "p10_ms": r.p10_ms, "p90_ms": r.p90_ms}
    out["device"] = torch.cuda.get_device_name()
    return out


def freezing_section(entry, space: SearchSpace, args: argparse.Namespace) -> dict[str, Any]:
    policy = Policy.uniform(space, rank=0.5)
    runs: dict[str, list[dict]] = {"joint": [], "sequential": []}
    for repeat in range(args.repeats):
        for mode in ("joint", "sequential"):
            model = apply_policy(entry.model, policy, space=space)
            on_step = alternate_factors(model) if mode == "sequential" else None
            stats = train(model, entry.task, epochs=args.finetune_epochs, seed=args.seed, on_step=on_step)
            unfreeze_factors(model)
            runs[mode].append({"steps_per_s": stats["steps"] / stats["seconds"], "final_loss": stats["final_loss"],
                               "metric": evaluate_metric(model, entry.task, "test") if repeat == 0 else None})
    return {mode: {"steps_per_s_median": statistics.median(r["steps_per_s"] for r in rs),
                   "final_loss": rs[0]["final_loss"], "metric": rs[0]["metric"]} for mode, rs in runs.items()}


# ------------------------------------------------------------------ report
def machine(target) -> dict[str, Any]:
    return {"target": target.name, "fingerprint": target.fingerprint(), "python": platform.python_version(),
            "load_average": os.getloadavg()[0], "date": time.strftime("%Y-%m-%d %H:%M"),
            "autocompress": _version()}


def _version() -> str:
    try:
        return importlib.metadata.version("autocompress")
    except importlib.metadata.PackageNotFoundError:
        return "source"


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    fp = m["fingerprint"]
    lines = [
        "# Hardware-aware compression: lookup tables, layer-targeted low rank, int8",
        "",
        f"Command `{result['command']}`; {m['date']}; target `{m['target']}` on {fp['processor']} "
        f"({fp['cores']} cores, {fp['machine']}), torch {fp['torch']}, onnxruntime {fp.get('onnxruntime', '-')}; "
        f"load average {m['load_average']:.1f} at start; seed {result['seed']}. Latencies are per batch, in ms.",
        "",
    ]
    if result.get("estimator"):
        lines += ["## Latency estimator (per-layer lookup table, calibrated per original)", "",
                  f"Calibration: the original and {result['settings']['calibration']} models of other random policies measured "
                  "whole, `whole ≈ a·Σ layer + b·Σ call + c` fitted (non-negative least squares); then "
                  f"{result['settings']['policies']} random prune + low-rank policies per model, error = estimate / measured - 1.", "",
                  "| model | median abs. error | p90 abs. error | a | b | c ms | layer configurations timed |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for e in result["estimator"]:
            k = e["calibration"]
            lines.append(f"| {e['model']} | {100 * e['median_abs_error']:.1f} % | {100 * e['p90_abs_error']:.1f} % | "
                         f"{k['scale']:.2f} | {k['per_call']:.2f} | {k['overhead_ms']:.3f} | {e['layer_configs']} |")
        lines.append("")
    for section in result.get("lowrank", []):
        lines += [f"## Layer-targeted low rank: {section['model']}", "",
                  "Per decomposable layer, table latency of the original and of its factorizations (ranks, ms, speed-up; "
                  "**bold**: faster than the original):", "",
                  "| layer | original ms | " + " | ".join(f"rank ×{r:g}" for r in RATIOS) + " |",
                  "|---|---:|" + "---:|" * len(RATIOS)]
        for layer in section["layers"]:
            cells = []
            for o in layer["options"]:
                text = f"{o['ranks']} {o['ms']:.3f} ({o['speedup']:.2f}×)"
                cells.append(f"**{text}**" if o["speedup"] > 1 else text)
            lines.append(f"| {layer['layer']} | {layer['original_ms']:.3f} | " + " | ".join(cells) + " |")
        lines += ["", f"Whole model, measured side by side (original {section['original_latency']['median_ms']:.3f} ms, "
                  f"test {section['metric_name']} {section['original_metric']:.2f}); each arm fine-tuned "
                  f"{result['settings']['finetune_epochs']:g} epoch(s), same seed:", "",
                  "| ratio | rule | layers factorized | MACs | test metric | latency ms (p10–p90) | speed-up |",
                  "|---:|---|---|---:|---:|---|---:|"]
        for a in section["arms"]:
            layers = ", ".join(f"{k} ×{v:g}" for k, v in a["layers"].items()) or "none"
            lat = a["latency"]
            same = f" (= {a['same_as']})" if "same_as" in a else ""
            lines.append(f"| {a['ratio']:g} | {a['rule']}{same} | {layers} | {100 * a['macs_ratio']:.0f} % | {a['metric']:.2f} | "
                         f"{lat['median_ms']:.3f} ({lat['p10_ms']:.3f}–{lat['p90_ms']:.3f}) | {a['speedup']:.2f}× |")
        if section.get("cuda"):
            c = section["cuda"]
            lines += ["", f"Same models on torch-cuda ({c['device']}, CUDA events, batch {result['settings']['batch']}): "
                      + ", ".join(f"{k} {v['median_ms']:.3f} ms" for k, v in c.items() if k != "device")]
        f = section["freezing"]
        lines += ["", f"Sequential freezing (rank ×0.5 on every decomposable layer, {result['settings']['finetune_epochs']:g} epoch(s), "
                  f"median of {result['settings']['repeats']} runs): joint {f['joint']['steps_per_s_median']:.1f} steps/s, "
                  f"final loss {f['joint']['final_loss']:.4f}, test {f['joint']['metric']:.2f}; sequential "
                  f"{f['sequential']['steps_per_s_median']:.1f} steps/s ({f['sequential']['steps_per_s_median'] / f['joint']['steps_per_s_median']:.2f}×), "
                  f"final loss {f['sequential']['final_loss']:.4f}, test {f['sequential']['metric']:.2f}.", ""]
    if result.get("int8"):
        lines += ["## int8 (static QDQ) vs fp32", "", result["int8"].get("markdown", json.dumps(result["int8"])[:2000]), ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    target = parse_target(args.target)
    table = LatencyTable.open(target)
    started = time.perf_counter()
    result: dict[str, Any] = {"command": "python benchmarks/hardware.py " + shlex.join(sys.argv[1:] if argv is None else argv),
                              "seed": args.seed, "machine": machine(target),
                              "settings": {"policies": args.policies, "finetune_epochs": args.finetune_epochs,
                                           "repeats": args.repeats, "rounds": args.rounds, "batch": target.batch,
                                           "calibration": args.calibration}}
    def save() -> None:  # after every model, so that a cut-off run keeps what it measured
        result["seconds"] = time.perf_counter() - started
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str))
        args.out.with_suffix(".md").write_text(markdown(result))

    for section, run in (("estimator", estimator_section), ("lowrank", lowrank_section)):
        if section in args.sections:
            result[section] = []
            for name in args.models:
                result[section].append(run(name, table, args))
                save()
    if "int8" in args.sections:
        try:
            sys.path.insert(0, str(Path(__file__).parent))
            from hardware_int8 import int8_section  # noqa: PLC0415

            result["int8"] = int8_section(list(args.models) + ["wine-mlp"], args.seed, target.threads, target.repeats,
                                          args.rounds)
        except ImportError as error:
            log(f"int8 section skipped: {error}")
    save()
    log(f"wrote {args.out}.json/.md in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
