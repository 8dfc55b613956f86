"""ODF2NNA (arXiv 2312.10560) on the bundled tabular datasets and MNIST-1D: three arms, many seeds.

    python benchmarks/odf2nna.py --threads 1                  # full run: 5 datasets x 10 seeds
    python benchmarks/odf2nna.py --seeds 0 --datasets wine --compare-seeds 0 \\
        --output /tmp/odf2nna_tiny                             # smoke test

Datasets (``autocompress.zoo.load_task``, 70/15/15 splits drawn from the seed; MNIST-1D: its fixed
test set, validation carved from training): breast_cancer, wine, digits (the 8x8 images
flattened to 64 features), diabetes (regression, standardized target, RMSE), mnist1d (the
40-sample signals flattened). Each gets a wide ``TabularMLP`` (plain Linear+ReLU hidden layers,
as the paper's dense networks; ``--batchnorm`` adds BatchNorm1d; DATASETS holds widths, epochs
E, retraining epochs R and batch sizes) trained from the seed with Adam (lr 1e-3, cosine
decay): the *original*.

Arms, for each dataset and seed s:

- ``original``: the wide MLP after its E training epochs;
- ``transfer``: ``refine_dense(original, task, "auto", tolerance=T, retrain_epochs=R)``: unit
  statistics on the training inputs, the epsilon grid swept from the top (each refined model
  retrained for R = E epochs, as long as the original was trained), the largest epsilon whose
  *validation* metric is at most T below the original's (T = 0.5 accuracy points, or 1 % of
  the validation RMSE for diabetes) and whose validation loss is above the original's by at
  most the loss tolerance (0.05 nats of cross-entropy; diabetes 2 % of the MSE) even after
  adding 1.645 standard errors of the paired per-sample loss differences (``refine_dense``'s
  defaults), its retrained model;
- ``scratch``: the transfer arm's architecture re-initialized (seeded) and trained for E + R
  epochs with the same optimizer, schedule, batch size and data order seed: as many epochs as
  the transfer arm's weights received (the sweep only chooses the architecture);
- ``fixed``: ``refine_dense(original, task, FIXED_EPSILON, retrain_epochs=R)``, the paper's protocol of
  one epsilon for every run; the value was chosen on the development seeds of
  ``benchmarks/odf2nna_choice.py``, never on these; with its own ``scratch`` (its architecture,
  E + R epochs). ``--fixed-epsilon -1`` skips it.

All arms are measured once on the test split; the table also gives the paired differences
(transfer − original, transfer − scratch: mean over seeds ± its standard error). How R and the
gate were chosen (on other seeds): ``benchmarks/odf2nna_choice.py``. ``--sweep-seeds``: the whole epsilon sweep (the
parameters / metric trade-off and its non-dominated points). ``--compare-seeds``: for every
statistic of ``autocompress.transforms.units`` (and random scores, a reference) the
lowest-scoring units are removed (one global threshold) until the parameters are at most 30 %
and 15 % of the original's, and the validation metric is measured before and after R retraining
epochs, on the plain originals and (``--compare-batchnorm``) on BN ones. That table chose the
default statistic.

Results: ``<output>.json`` (every cell, the sweeps, settings) and ``<output>.md``.
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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress import count_cost
from autocompress.finetune import evaluate_metric, train
from autocompress.search.refine import refine_dense, reinitialized, sweep_epsilon
from autocompress.search.refine_gate import (
    DEFAULT_CONFIDENCE,
    DEFAULT_LOSS_TOLERANCE,
    DEFAULT_REGRESSION_LOSS_TOLERANCE,
)
from autocompress.task import Task
from autocompress.transforms.dense_chain import DenseChain, dense_chain
from autocompress.transforms.units import (
    DEFAULT_EPSILONS,
    DEFAULT_STATISTIC,
    STATISTICS,
    measure_units,
    rebuild_dense,
    select_units,
    unit_scores,
)
from autocompress.zoo import load_task
from autocompress.zoo.models import TabularMLP

ROOT = Path(__file__).resolve().parent.parent
TARGETS = (0.3, 0.15)
#: the single epsilon for every dataset, chosen on the development seeds of benchmarks/odf2nna_choice.py
#: (``results/odf2nna_choice.md``, "One epsilon for every dataset"): the most datasets with at least
#: 70 % of the parameters removed at no mean loss of test accuracy there (3 of 5; no loss on all 5)
FIXED_EPSILON = 0.45


@dataclass(frozen=True)
class Setting:
    """How a dataset's original MLP is built and trained."""

    task: str
    hidden: tuple[int, ...]
    epochs: float
    retrain_epochs: float
    batch_size: int
    flatten: bool = False


DATASETS: dict[str, Setting] = {  # retraining epochs R = training epochs E (see odf2nna_choice.py)
    "breast_cancer": Setting("breast_cancer", (512, 512), 30, 30, 64),
    "wine": Setting("wine", (512, 512), 30, 30, 32),
    "digits": Setting("digits", (512, 512), 30, 30, 64, flatten=True),
    "diabetes": Setting("diabetes", (512, 512), 10, 10, 32),
    "mnist1d": Setting("mnist1d", (256, 256), 10, 10, 128, flatten=True),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--seeds", nargs="*", type=int, default=list(range(10)))
    parser.add_argument("--compare-seeds", nargs="*", type=int, default=[0, 1],
                        help="seeds on which the statistics are compared (none: skip)")
    parser.add_argument("--retrain-epochs", type=float, default=None,
                        help="retraining epochs of a refined model (default: per dataset, see DATASETS)")
    parser.add_argument("--fixed-epsilon", type=float, default=FIXED_EPSILON,
                        help="also refine at this one epsilon (default: the one chosen on other seeds, see FIXED_EPSILON); "
                             "a negative value skips that arm")
    parser.add_argument("--tolerance", type=float, default=0.5, help="accuracy points (classification)")
    parser.add_argument("--rmse-tolerance", type=float, default=0.01, help="relative, for diabetes")
    parser.add_argument("--batchnorm", action="store_true", help="Linear+BN+ReLU originals (default: plain Linear+ReLU)")
    parser.add_argument("--compare-batchnorm", action=argparse.BooleanOptionalAction, default=True,
                        help="also compare the statistics on originals of the other kind (BN / plain)")
    parser.add_argument("--sweep-seeds", nargs="*", type=int, default=[0],
                        help="seeds whose whole epsilon sweep (trade-off curve) is reported")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "odf2nna")
    return parser.parse_args(argv)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------------- data and models


def load(name: str, seed: int, batch_size: int) -> Task:

    setting = DATASETS[name]
    task = load_task(setting.task, seed=seed)
    if setting.flatten:
        flat = {split: (getattr(task, split)[0].flatten(1), getattr(task, split)[1]) for split in ("train", "val", "test")}
        task = Task(f"{task.name}-flat", flat["train"], flat["val"], flat["test"], metric=task.metric, loss=task.loss)
    task.batch_size = batch_size
    return task


def build(task: Task, hidden: tuple[int, ...], seed: int, batchnorm: bool) -> nn.Module:

    out = int(task.train[1].max()) + 1 if task.is_classification else task.train[1].shape[1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TabularMLP(task.train[0].shape[1], out, hidden=hidden, batchnorm=batchnorm)


def retrain_epochs(name: str, args: argparse.Namespace) -> float:
    return DATASETS[name].retrain_epochs if args.retrain_epochs is None else args.retrain_epochs


def task_name(task: Task) -> str:
    return task.name.removesuffix("-flat")


def shown(task: Task, metric: float) -> float:
    """Accuracy in percent, or RMSE (the task's metric is neg_rmse)."""
    return -metric if task.metric == "neg_rmse" else metric


def params(model: nn.Module, task: Task) -> int:

    return count_cost(model, task.example_input(1)).params


# --------------------------------------------------------------------------- the three arms


def run_cell(name: str, seed: int, args: argparse.Namespace) -> tuple[dict[str, Any], nn.Module, Task]:

    setting = DATASETS[name]
    retrain = retrain_epochs(name, args)
    task = load(name, seed, setting.batch_size)
    start = time.perf_counter()
    original = build(task, setting.hidden, seed, args.batchnorm)
    train(original, task, epochs=setting.epochs, seed=seed)
    original.eval()
    trained_s = time.perf_counter() - start
    tolerance = args.tolerance if task.metric == "accuracy" else args.rmse_tolerance * abs(evaluate_metric(original, task, "val"))
    refined, report = refine_dense(original, task, "auto", tolerance=tolerance, retrain_epochs=retrain, seed=seed)
    refined_s = time.perf_counter() - start - trained_s
    sweep = []
    if seed in args.sweep_seeds:
        sweep = [p.model_dump() for p, _ in sweep_epsilon(original, task, DEFAULT_EPSILONS, retrain_epochs=retrain, seed=seed)]
        for point in sweep:
            point["metric"], point["metric_before_retrain"] = shown(task, point["metric"]), shown(task, point["metric_before_retrain"])
    test = arm_tests(original, refined, task, setting.epochs + retrain, seed)
    params_original = params(original, task)
    fixed = {}
    if args.fixed_epsilon >= 0:
        small, small_report = refine_dense(original, task, args.fixed_epsilon, retrain_epochs=retrain, seed=seed)
        fixed = {"dataset": name, "seed": seed, "epsilon": args.fixed_epsilon, "params_original": params_original,
                 "params_refined": params(small, task), "hidden": small_report.hidden,
                 "test": arm_tests(original, small, task, setting.epochs + retrain, seed)}
    cell = {
        "dataset": name,
        "seed": seed,
        "params_original": params_original,
        "params_refined": params(refined, task),
        "hidden": report.hidden,
        "epsilon": report.epsilon,
        "met_tolerance": report.met_tolerance,
        "tolerance": tolerance,
        "loss_tolerance": report.loss_tolerance,
        "confidence": report.confidence,
        "val": {"original": shown(task, report.metric_original), "transfer": shown(task, report.metric_retrained or report.metric_original)},
        "test": test,
        "fixed": fixed,
        "val_before_retrain": shown(task, report.metric_before_retrain),
        "auto_sweep": [p.model_dump() for p in report.sweep],
        "full_sweep": sweep,
        "seconds": {"train": trained_s, "refine_auto": refined_s, "total": time.perf_counter() - start},
    }
    return cell, original, task


def arm_tests(original: nn.Module, refined: nn.Module, task: Task, scratch_epochs: float, seed: int) -> dict[str, float]:
    """Test metric of the original, the refined (transfer) model and its architecture trained from scratch
    (re-initialized from ``seed + 1000``, ``scratch_epochs`` epochs)."""
    scratch = reinitialized(refined, seed=seed + 1000)
    train(scratch, task, epochs=scratch_epochs, seed=seed)
    return {arm: shown(task, evaluate_metric(model, task, "test"))
            for arm, model in (("original", original), ("transfer", refined), ("scratch", scratch))}


# --------------------------------------------------------------------------- statistic comparison


def dense_params(model: nn.Module, chain: DenseChain, counts: dict[str, int]) -> int:
    """Parameter count of the rebuilt MLP keeping ``counts[linear]`` units per hidden layer."""
    total, width = 0, None
    for layer in [*chain.layers, None]:
        linear = model.get_submodule(layer.linear if layer else chain.head)
        units = counts[layer.linear] if layer else linear.out_features
        inputs = linear.in_features if width is None else width
        total += inputs * units + (units if linear.bias is not None else 0)
        if layer:
            total += sum(2 * units for n in layer.elementwise if isinstance(model.get_submodule(n), nn.BatchNorm1d))
        width = units
    return total


def threshold_for(model: nn.Module, chain: DenseChain, scores: dict[str, torch.Tensor], target: int) -> float:
    """The smallest epsilon whose selection has at most ``target`` parameters."""

    candidates = sorted({0.0, *torch.cat(list(scores.values())).tolist()})
    low, high = 0, len(candidates)  # params(candidates[i]) is non-increasing in i

    def count(epsilon: float) -> int:
        return dense_params(model, chain, {k: len(v) for k, v in select_units(scores, epsilon).items()})

    while low < high:
        middle = (low + high) // 2
        if count(candidates[middle]) <= target:
            high = middle
        else:
            low = middle + 1
    return candidates[min(low, len(candidates) - 1)] + (0.0 if low < len(candidates) else 1e-9)


def compare_statistics(original: nn.Module, task: Task, seed: int, args: argparse.Namespace) -> list[dict[str, Any]]:

    inputs = task.train[0]
    chain = dense_chain(original, inputs[:8])
    stats = measure_units(original, inputs, chain)
    total = dense_params(original, chain, {layer.linear: len(stats[layer.linear].mean) for layer in chain.layers})
    generator = torch.Generator().manual_seed(seed)
    original_val = shown(task, evaluate_metric(original, task, "val"))
    variant = "BN" if any(isinstance(m, nn.BatchNorm1d) for m in original.modules()) else "plain"
    rows = []
    for statistic in (*STATISTICS, "random"):
        if statistic == "random":
            scores = {k: torch.rand(len(v.mean), generator=generator, dtype=torch.float64) for k, v in stats.items()}
        else:
            scores = unit_scores(original, chain, stats, statistic)
        for target in TARGETS:
            epsilon = threshold_for(original, chain, scores, int(target * total))
            kept = select_units(scores, epsilon)
            small = rebuild_dense(original, chain, kept, stats)
            before = evaluate_metric(small, task, "val")
            train(small, task, epochs=retrain_epochs(task_name(task), args), seed=seed)
            rows.append({
                "statistic": statistic, "target": target, "seed": seed, "variant": variant, "val_original": original_val,
                "params_ratio": params(small, task) / total,
                "hidden": [len(kept[layer.linear]) for layer in chain.layers],
                "val_before": shown(task, before), "val_after": shown(task, evaluate_metric(small, task, "val")),
            })
    return rows


# --------------------------------------------------------------------------- report


def mean_std(values: list[float], digits: int = 2) -> str:
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {std:.{digits}f}"


def arms_table(cells: list[dict[str, Any]], datasets: list[str]) -> list[str]:
    lines = [
        "| dataset | metric | original params | refined params | removed % | ε chosen (median, range) | original | transfer (refined + retrain) "
        "| scratch (same arch.) | transfer − original | transfer − scratch | transfer ≥ original | transfer ≥ scratch |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in datasets:
        rows = [c for c in cells if c["dataset"] == name]
        if not rows:
            continue
        regression = name == "diabetes"
        removed = [100 * (1 - c["params_refined"] / c["params_original"]) for c in rows]
        eps = [c["epsilon"] for c in rows]
        test = {arm: [c["test"][arm] for c in rows] for arm in ("original", "transfer", "scratch")}
        wins_orig = sum(at_least(c["test"]["transfer"], c["test"]["original"], regression) for c in rows)
        wins_scratch = sum(at_least(c["test"]["transfer"], c["test"]["scratch"], regression) for c in rows)
        digits = 3 if regression else 2
        lines.append(
            f"| {name} | {'test RMSE ↓' if regression else 'test acc. % ↑'} | {rows[0]['params_original']:,} | "
            f"{mean_std([c['params_refined'] for c in rows], 0)} | {mean_std(removed, 1)} | "
            f"{statistics.median(eps):g} ({min(eps):g}–{max(eps):g}) | {mean_std(test['original'], digits)} | "
            f"{mean_std(test['transfer'], digits)} | {mean_std(test['scratch'], digits)} | "
            f"{paired(test['transfer'], test['original'], digits)} | {paired(test['transfer'], test['scratch'], digits)} | "
            f"{wins_orig}/{len(rows)} | {wins_scratch}/{len(rows)} |"
        )
    return lines


def paired(a: list[float], b: list[float], digits: int) -> str:
    """Mean of the paired differences ``a - b`` ± its standard error (std / sqrt(n))."""
    differences = [x - y for x, y in zip(a, b, strict=True)]
    se = statistics.stdev(differences) / len(differences) ** 0.5 if len(differences) > 1 else 0.0
    return f"{statistics.mean(differences):+.{digits}f} ± {se:.{digits}f}"


def at_least(a: float, b: float, regression: bool) -> bool:
    """``a`` is at least as good as ``b`` (RMSE: lower is better)."""
    return a <= b if regression else a >= b


def sweep_table(cells: list[dict[str, Any]]) -> list[str]:
    lines = ["| dataset | seed | ε | params | hidden | val before retrain | val after retrain | non-dominated |",
             "|---|---:|---:|---:|---|---:|---:|:---:|"]
    for cell in cells:
        seen = set()
        for p in cell["full_sweep"]:
            if tuple(p["hidden"]) in seen:
                continue
            seen.add(tuple(p["hidden"]))
            digits = 3 if cell["dataset"] == "diabetes" else 1
            lines.append(f"| {cell['dataset']} | {cell['seed']} | {p['epsilon']:g} | {p['params']:,} | {'-'.join(map(str, p['hidden']))} | "
                         f"{p['metric_before_retrain']:.{digits}f} | {p['metric']:.{digits}f} | {'✓' if p['on_front'] else ''} |")
    return lines


def compare_table(rows: list[dict[str, Any]], datasets: list[str], variant: str) -> list[str]:
    """Validation metric before / after retraining per statistic and parameter target, and mean ranks."""
    rows = [r for r in rows if r["variant"] == variant]
    present = [d for d in datasets if any(r["dataset"] == d for r in rows)]
    header = "| statistic | params ≤ | " + " | ".join(f"{d}" for d in present) + " | mean rank before | mean rank after |"
    lines = [header, "|---|---:|" + "---:|" * len(present) + "---:|---:|"]
    originals = []
    for d in present:
        by_seed = {r["seed"]: r["val_original"] for r in rows if r["dataset"] == d}
        originals.append(f"{statistics.mean(by_seed.values()):.{3 if d == 'diabetes' else 1}f}")
    lines.append("| (original) | 100 % | " + " | ".join(originals) + " | | |")
    ranks = _ranks(rows)
    for statistic in dict.fromkeys(r["statistic"] for r in rows):
        for target in TARGETS:
            cells = []
            for d in present:
                sel = [r for r in rows if r["statistic"] == statistic and r["target"] == target and r["dataset"] == d]
                digits = 3 if d == "diabetes" else 1
                cells.append(f"{statistics.mean(r['val_before'] for r in sel):.{digits}f} / {statistics.mean(r['val_after'] for r in sel):.{digits}f}")
            mine = [v for k, v in ranks.items() if k[0] == statistic and k[2] == target]
            lines.append(f"| {statistic} | {int(100 * target)} % | " + " | ".join(cells)
                         + f" | {statistics.mean(m[0] for m in mine):.2f} | {statistics.mean(m[1] for m in mine):.2f} |")
    overall = {st: [v for k, v in ranks.items() if k[0] == st] for st in dict.fromkeys(r["statistic"] for r in rows)}
    lines += ["", "Mean rank over every dataset, seed and target (before / after retraining): " + "; ".join(
        f"{st} {statistics.mean(v[0] for v in vals):.2f} / {statistics.mean(v[1] for v in vals):.2f}" for st, vals in overall.items()) + "."]
    return lines


def _ranks(rows: list[dict[str, Any]]) -> dict[tuple, tuple[float, float]]:
    """Rank (1 = best; ties share their mean rank) of each statistic within each (dataset, seed, target)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["seed"], r["target"]), []).append(r)
    out = {}
    for (dataset, seed, target), group in groups.items():
        sign = 1.0 if dataset == "diabetes" else -1.0  # ascending in sign * value = best first
        ranked = []
        for key in ("val_before", "val_after"):
            values = sorted(sign * r[key] for r in group)
            ranked.append([statistics.mean(i + 1 for i, v in enumerate(values) if v == sign * r[key]) for r in group])
        for index, r in enumerate(group):
            out[(r["statistic"], dataset, target, seed)] = (ranked[0][index], ranked[1][index])
    return out


def write_report(meta: dict[str, Any], cells: list[dict[str, Any]], comparison: list[dict[str, Any]], output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps({"meta": meta, "cells": cells, "statistic_comparison": comparison}, indent=1))
    s = meta["settings"]
    kind = "Linear+BN+ReLU" if s["batchnorm"] else "Linear+ReLU, no BatchNorm"
    lines = [
        "# ODF2NNA: refine wide MLPs by unit variability, retrain (arXiv 2312.10560)",
        "",
        f"Machine: {meta['machine']}; date {meta['date']}; torch {meta['torch']}; seeds {s['seeds']}; "
        f"wall time {meta['wall_s']:.0f} s; command `{meta['command']}`.",
        "",
        f"Originals: `TabularMLP` ({kind}); widths / training epochs / batch size: "
        + "; ".join(f"{d} {'x'.join(map(str, DATASETS[d].hidden))} / {DATASETS[d].epochs:g} / {DATASETS[d].batch_size}" for d in s["datasets"])
        + f"; Adam lr 1e-3, cosine decay. Statistic `{meta['statistic']}`; ε grid {meta['epsilons']}; "
        f"each refined model retrained for {retrain_text(s)}; ε chosen on the validation split: the largest "
        f"whose metric is ≤ {s['tolerance']:g} accuracy points (diabetes: {100 * s['rmse_tolerance']:g} % of the RMSE) "
        "below the original's and whose validation loss is above the original's by at most "
        f"{DEFAULT_LOSS_TOLERANCE:g} nats of cross-entropy (diabetes: {100 * DEFAULT_REGRESSION_LOSS_TOLERANCE:g} % of the MSE) "
        f"even after adding {DEFAULT_CONFIDENCE:g} standard errors of the paired per-sample loss differences "
        "(`refine_dense`'s loss gate). Scratch: the chosen architecture re-initialized and trained for the original's epochs "
        "+ the retrain epochs (same optimizer, schedule, batch size). Test split, mean ± std over seeds; transfer − original "
        "and transfer − scratch: the paired differences, mean ± standard error over seeds (diabetes: RMSE, negative is "
        "better); the last two columns count the seeds where the transfer arm is at least as good. Validation / test sizes: "
        + "; ".join(f"{d} {meta['split_sizes'][d]['val']} / {meta['split_sizes'][d]['test']}" for d in s["datasets"]) + ".",
        "",
        *arms_table(cells, s["datasets"]),
        "",
    ]
    fixed = [c["fixed"] for c in cells if c.get("fixed")]
    if fixed:
        lines += [
            f"## One ε for every dataset (ε = {fixed[0]['epsilon']:g}, chosen on other seeds)",
            "",
            "The paper's protocol: one ε, not a per-run search. This ε was chosen on the development seeds of "
            "`benchmarks/odf2nna_choice.py` (`results/odf2nna_choice.md`, \"One ε for every dataset\"), not on these. "
            "`refine_dense(original, task, ε, retrain_epochs=R)`, then the same arms and columns as above.",
            "",
            *arms_table(fixed, s["datasets"]),
            "",
        ]
    swept = [c for c in cells if c["full_sweep"]]
    if swept:
        lines += [
            f"## The ε trade-off (whole sweep, seeds {s['sweep_seeds']})",
            "",
            "Validation metric of the refined model (bias folded) before and after retraining, per ε (ε values that keep "
            "the same units are listed once); non-dominated: no other point has fewer-or-equal parameters and a "
            "better-or-equal retrained metric (`autocompress.search.pareto.non_dominated`).",
            "",
            *sweep_table(swept),
            "",
        ]
    for variant in dict.fromkeys(r["variant"] for r in comparison):
        lines += [
            f"## Which unit statistic ({'Linear+BN+ReLU' if variant == 'BN' else 'Linear+ReLU'} originals; validation metric, before / after retraining)",
            "",
            f"Seeds {s['compare_seeds']}. For each statistic (and random scores, a reference), one global threshold removes "
            "the lowest-scoring units until the parameters are at most the target share of the original's; the refined "
            f"model (bias folded) is measured on the validation split before and after retraining for {retrain_text(s)} "
            "(accuracy %, diabetes RMSE). Ranks: 1 = best of the statistics in that dataset, seed and target.",
            "",
            *compare_table(comparison, s["datasets"], variant),
            "",
        ]
    output.with_suffix(".md").write_text("\n".join(lines))


def retrain_text(settings: dict[str, Any]) -> str:
    if settings["retrain_epochs"] is not None:
        return f"{settings['retrain_epochs']:g} epochs"
    return "; ".join(f"{d} {DATASETS[d].retrain_epochs:g}" for d in settings["datasets"]) + " epochs"


def machine() -> str:
    load = f", load average {os.getloadavg()[0]:.1f} at start" if hasattr(os, "getloadavg") else ""
    return f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, cpu{load}"


def compare_on_fresh(name: str, seed: int, batchnorm: bool, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The statistic comparison on an original trained just for it (the other kind of MLP)."""

    setting = DATASETS[name]
    task = load(name, seed, setting.batch_size)
    original = build(task, setting.hidden, seed, batchnorm)
    train(original, task, epochs=setting.epochs, seed=seed)
    return compare_statistics(original.eval(), task, seed, args)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    meta: dict[str, Any] = {
        "command": "python benchmarks/odf2nna.py" + "".join(f" {shlex.quote(a)}" for a in (argv if argv is not None else sys.argv[1:])),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "autocompress": importlib.metadata.version("autocompress"),
        "statistic": DEFAULT_STATISTIC,
        "epsilons": list(DEFAULT_EPSILONS),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "split_sizes": {},
    }
    cells, comparison = [], []
    for name in args.datasets:
        meta["split_sizes"][name] = load(name, 0, DATASETS[name].batch_size).num_samples
        for seed in args.seeds:
            cell, original, task = run_cell(name, seed, args)
            cells.append(cell)
            log(f"{name} seed {seed}: params {cell['params_original']} -> {cell['params_refined']} (ε {cell['epsilon']:g}), "
                f"test {cell['test']} in {cell['seconds']['total']:.1f} s")
            if seed in args.compare_seeds:
                comparison += [{"dataset": name, **r} for r in compare_statistics(original, task, seed, args)]
        for seed in args.compare_seeds:
            if seed not in args.seeds:
                comparison += [{"dataset": name, **r} for r in compare_on_fresh(name, seed, args.batchnorm, args)]
            if args.compare_batchnorm:
                comparison += [{"dataset": name, **r} for r in compare_on_fresh(name, seed, not args.batchnorm, args)]
        log(f"{name}: done at {time.perf_counter() - start:.0f} s")
    meta["wall_s"] = time.perf_counter() - start
    write_report(meta, cells, comparison, args.output)
    log(f"wrote {args.output.with_suffix('.md')} and .json in {meta['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
