"""Accuracy predictors on MNIST-1D CNN policies: Kendall τ and RMSE against the number of labels.

    python benchmarks/predictor.py                        # 400 labelled policies (~20 min once), 5 seeds
    python benchmarks/predictor.py --pool 60 --test 30 --sizes 10 25 --seeds 0   # smoke test

1. **Labels** (once, resumable): ``--pool + --test`` random policies of the pretrained zoo
   model ``mnist1d-cnn`` (methods prune + bits: pruning 0-0.9, weight bits 32/8/6/4/3,
   activation bits 32/8/6/4), each applied, fine-tuned for ``--finetune-epochs`` (1) and
   measured on the validation split: an autocompress search with strategy ``random`` in
   ``runs/predictor/labels.db`` (run again: nothing is evaluated twice). The first
   ``--test`` candidates (by trial number) are the held-out test set; the rest is the pool.
2. **Predictors** (``autocompress.predict.AccuracyPredictor``: mlp = SeerNet's MLP,
   ensemble of 5 such MLPs, gp, linear = Bayesian ridge) fitted on ``n`` labelled pool
   policies for ``n`` in ``--sizes``, scored on the test set: Kendall τ, Spearman ρ, RMSE
   (accuracy points).
3. **Selection**: ``random`` — ``n`` pool policies drawn at random (seeded); ``informative`` —
   10 random, then batches of max(5, n_labelled / 4) picked by
   ``autocompress.predict.select_from_pool`` (uncertainty of a GP fitted on the labels so
   far, damped near labelled policies) until ``n``. Pool-based, so both arms draw on the
   same labels; the same selected sets are given to every predictor.
4. **Re-optimization**: the default predictor fitted on the largest label set, then
   ``optimize_policy`` for 20 BitOps budgets (0.3 … 0.003 of the original): seconds per
   budget (median) and an exact-count check of every returned policy.

Features: ``policy_features`` (prune ratios; bit-widths as log2). Seeds change the random
draws and the predictors' initialization, not the labels. Writes
``benchmarks/results/predictor.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from autocompress import Policy, SearchSpace
from autocompress.predict import (
    KINDS,
    AccuracyPredictor,
    policy_features,
    ranking_metrics,
    select_from_pool,
)
from autocompress.search import search
from autocompress.search.optimize import optimize_policy
from autocompress.zoo import load_zoo

RESULTS = Path(__file__).parent / "results"
SELECTIONS = ("random", "informative")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def labels(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, SearchSpace, dict]:
    """Features and labels of every labelled policy (evaluating what is missing), in trial order."""
    zoo = load_zoo(args.zoo, pretrained=True, seed=0)
    space = SearchSpace.from_model(zoo.model, zoo.example_input, methods=["prune", "quant"],
                                   weight_bits_choices=(32, 8, 6, 4, 3), act_bits_choices=(32, 8, 6, 4))
    total = args.pool + args.test
    start = time.perf_counter()
    study = search(zoo.model, zoo.task, space, objectives=("accuracy", "bitops"), strategy="random", budget=total,
                   storage=args.runs / "labels.db", study_name=f"{args.zoo}-prune+bits-ft{args.finetune_epochs:g}",
                   seed=0, finetune_epochs=args.finetune_epochs, progress=sys.stdout.isatty())
    records = sorted(study.completed(), key=lambda r: r.number)[:total]
    if len(records) < total:
        raise SystemExit(f"only {len(records)} of {total} labels completed; run again to finish")
    X = policy_features(space, [r.policy for r in records])
    y = np.array([r.values["metric"] for r in records])
    info = {"labels": len(records), "seconds_this_run": time.perf_counter() - start,
            "seconds_stored": sum(r.seconds for r in records), "metric_original": records[0].values["metric_original"],
            "label_mean": float(y.mean()), "label_std": float(y.std()), "features": X.shape[1]}
    return X, y, space, info


def choose(selection: str, n: int, pool: np.ndarray, y_pool: np.ndarray, seed: int) -> np.ndarray:
    """Indices of ``n`` pool policies to label."""
    rng = np.random.default_rng(seed)
    if selection == "random":
        return rng.permutation(len(pool))[:n]
    picked = list(rng.permutation(len(pool))[: min(10, n)])
    while len(picked) < n:
        model = AccuracyPredictor("gp", seed=seed).fit(pool[picked], y_pool[picked])
        rest = np.setdiff1d(np.arange(len(pool)), picked)
        batch = min(max(5, len(picked) // 4), n - len(picked))
        chosen = select_from_pool(model, pool[rest], batch, pool[picked])
        picked += [int(rest[i]) for i in chosen]
    return np.array(picked)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zoo", default="mnist1d-cnn")
    parser.add_argument("--pool", type=int, default=300, help="labelled policies the selections draw from")
    parser.add_argument("--test", type=int, default=100, help="held-out labelled policies")
    parser.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 100, 200])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--finetune-epochs", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=Path, default=Path("runs/predictor"))
    parser.add_argument("--out", type=Path, default=RESULTS / "predictor")
    parser.add_argument("--external-max", type=int, default=300, help="at most this many external labels (seeded subsample)")
    parser.add_argument("--external-only", action="store_true",
                        help="only the check on labels from another source (writes <out>_external.{md,json})")
    parser.add_argument("--reoptimization-only", action="store_true",
                        help="only the re-optimization timing (writes <out>_reoptimization.{md,json})")
    parser.add_argument("--external", type=Path, default=Path("runs/search-efficiency/budget40.db"),
                        help="labels from another source for a cross-validated check (skipped if missing)")
    args = parser.parse_args(argv)
    if max(args.sizes) > args.pool:
        parser.error(f"--sizes go up to {max(args.sizes)} but the pool holds {args.pool}")
    torch.set_num_threads(args.threads)
    wall = time.perf_counter()
    X, y, space, info = labels(args)
    X_test, y_test, pool, y_pool = X[: args.test], y[: args.test], X[args.test:], y[args.test:]
    log(f"{info['labels']} labels (mean {info['label_mean']:.2f}, std {info['label_std']:.2f}); "
        f"{len(pool)} pool, {len(X_test)} test, {X.shape[1]} features")
    if args.external_only:
        external = external_check(args)
        command = "python benchmarks/predictor.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
        head = f"Command `{command.strip()}`; {time.strftime('%Y-%m-%d')}; {platform.machine()}, {os.cpu_count()} cores.\n"
        target = args.out.parent / f"{args.out.name}_external"
        target.with_suffix(".json").write_text(json.dumps(external, indent=2))
        target.with_suffix(".md").write_text(head + external_markdown(external))
        print(head + external_markdown(external))
        return
    if args.reoptimization_only:
        reopt = reoptimization(pool, y_pool, space, args)
        command = "python benchmarks/predictor.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
        head = (f"Command `{command.strip()}`; {time.strftime('%Y-%m-%d')}; {platform.machine()}, {os.cpu_count()} cores, "
                f"{torch.get_num_threads()} torch threads; labels as in predictor.md.\n")
        target = args.out.parent / f"{args.out.name}_reoptimization"
        target.with_suffix(".json").write_text(json.dumps(reopt, indent=2))
        target.with_suffix(".md").write_text(head + reopt_markdown(reopt))
        print(head + reopt_markdown(reopt))
        return

    rows = []
    for seed in args.seeds:
        for selection in SELECTIONS:
            for n in args.sizes:
                picked = choose(selection, n, pool, y_pool, seed)
                for kind in args.kinds:
                    start = time.perf_counter()
                    predictor = AccuracyPredictor(kind, seed=seed).fit(pool[picked], y_pool[picked])
                    metrics = ranking_metrics(y_test, predictor.predict(X_test))
                    rows.append({"seed": seed, "selection": selection, "n": n, "kind": kind, **metrics,
                                 "fit_seconds": time.perf_counter() - start})
                log(f"seed {seed} {selection} n={n}: " + ", ".join(
                    f"{r['kind']} τ {r['kendall_tau']:.3f}" for r in rows[-len(args.kinds):]))

    summary = summarize(rows, args)
    reopt = reoptimization(pool, y_pool, space, args)
    external = external_check(args)
    log(f"re-optimization: median {reopt['median_seconds']:.3f} s over {len(reopt['budgets'])} budgets, "
        f"all within budget: {reopt['all_within_budget']}")
    command = "python benchmarks/predictor.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    meta = {"command": command.strip(), "date": time.strftime("%Y-%m-%d"), "seeds": args.seeds,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads",
            "torch": torch.__version__, "wall_seconds": time.perf_counter() - wall, "labels": info,
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "summary": summary, "rows": rows,
                                                         "reoptimization": reopt, "external": external}, indent=2))
    text = markdown(summary, meta, args) + reopt_markdown(reopt) + external_markdown(external)
    args.out.with_suffix(".md").write_text(text)
    plot(summary, args)
    print(text)


def reoptimization(pool: np.ndarray, y_pool: np.ndarray, space: SearchSpace, args: argparse.Namespace) -> dict:
    """Time ``optimize_policy`` for 20 BitOps budgets on the default predictor fitted on the largest label set."""
    n = max(args.sizes)
    predictor = AccuracyPredictor(seed=0).fit(pool[:n], y_pool[:n])
    base = space.cost(Policy()).bitops
    budgets = []
    for ratio in np.geomspace(0.3, 0.003, 20):
        result = optimize_policy(predictor, space, float(ratio), cost="bitops")
        exact = space.cost(result.policy).bitops
        budgets.append({"bitops_ratio_budget": float(ratio), "bitops_ratio": exact / base, "within": bool(exact <= ratio * base),
                        "predicted": result.predicted, "seconds": result.seconds, "steps": result.steps})
    seconds = [b["seconds"] for b in budgets]
    return {"predictor": predictor.kind_, "labels": n, "budgets": budgets, "median_seconds": statistics.median(seconds),
            "max_seconds": max(seconds), "all_within_budget": bool(all(b["within"] for b in budgets))}


def external_check(args: argparse.Namespace) -> dict | None:
    """5-fold cross-validated ranking on labels from another source: the search-efficiency studies.

    Different search space (prune + low-rank + bits: wider encoding), other strategies,
    30-step fine-tunes: the predictors take those arrays as they are.
    """
    import optuna
    from sklearn.model_selection import KFold

    from autocompress.search.study import Study

    if not args.external.exists():
        return None
    zoo = load_zoo(args.zoo, pretrained=True, seed=0)
    space = SearchSpace.from_model(zoo.model, zoo.example_input, methods=["prune", "lowrank", "quant"])
    records = []
    for name in optuna.get_all_study_names(f"sqlite:///{args.external}"):
        records += [r for r in Study.open(args.external, name, create=False).completed() if r.ok]
    if len(records) > args.external_max:  # a GP fit grows as n^3: a seeded subsample keeps this to minutes
        keep = np.random.default_rng(0).permutation(len(records))[: args.external_max]
        records = [records[i] for i in sorted(keep)]
    X = policy_features(space, [r.policy for r in records])
    y = np.array([r.values["metric"] for r in records])
    out = {"source": str(args.external), "labels": len(records), "features": X.shape[1], "kinds": {}}
    for kind in args.kinds:
        taus, rmses = [], []
        for train, test in KFold(5, shuffle=True, random_state=0).split(X):
            metrics = ranking_metrics(y[test], AccuracyPredictor(kind, seed=0).fit(X[train], y[train]).predict(X[test]))
            taus.append(metrics["kendall_tau"])
            rmses.append(metrics["rmse"])
        out["kinds"][kind] = {"tau_mean": statistics.mean(taus), "tau_std": statistics.stdev(taus), "rmse_mean": statistics.mean(rmses)}
    return out


def external_markdown(external: dict | None) -> str:
    if external is None:
        return ""
    lines = ["", f"Labels from another source (`{external['source']}`: the search-efficiency studies, {external['labels']} "
             f"policies of a prune + low-rank + bits space, {external['features']} features, 30-step fine-tunes, other "
             "strategies), 5-fold cross-validation, no code changed:", "",
             "| predictor | Kendall τ | RMSE |", "|---|---:|---:|"]
    for kind, m in external["kinds"].items():
        lines.append(f"| {kind} | {m['tau_mean']:.3f} ± {m['tau_std']:.3f} | {m['rmse_mean']:.2f} |")
    return "\n".join(lines) + "\n"


def reopt_markdown(reopt: dict) -> str:
    lines = [
        "",
        f"Re-optimization for a new budget (`autocompress.search.optimize.optimize_policy`, predictor `{reopt['predictor']}` "
        f"fitted on {reopt['labels']} labels, 20 BitOps budgets from 0.3 to 0.003 of the original): median "
        f"**{reopt['median_seconds']:.3f} s**, max {reopt['max_seconds']:.3f} s; every returned policy within its budget "
        f"by exact count: **{'yes' if reopt['all_within_budget'] else 'NO'}**.",
        "",
        "| BitOps budget | BitOps reached | predicted accuracy | seconds |",
        "|---:|---:|---:|---:|",
    ]
    for b in reopt["budgets"]:
        lines.append(f"| {b['bitops_ratio_budget']:.4f} | {b['bitops_ratio']:.4f} | {b['predicted']:.2f} | {b['seconds']:.3f} |")
    return "\n".join(lines) + "\n"


def summarize(rows: list[dict], args: argparse.Namespace) -> list[dict]:
    out = []
    for selection in SELECTIONS:
        for kind in args.kinds:
            for n in args.sizes:
                mine = [r for r in rows if r["selection"] == selection and r["kind"] == kind and r["n"] == n]
                taus, rmses = [r["kendall_tau"] for r in mine], [r["rmse"] for r in mine]
                out.append({"selection": selection, "kind": kind, "n": n, "runs": len(mine),
                            "tau_mean": statistics.mean(taus), "tau_std": statistics.stdev(taus) if len(taus) > 1 else 0.0,
                            "rho_mean": statistics.mean(r["spearman_rho"] for r in mine),
                            "rmse_mean": statistics.mean(rmses), "rmse_std": statistics.stdev(rmses) if len(rmses) > 1 else 0.0,
                            "fit_seconds_median": statistics.median(r["fit_seconds"] for r in mine)})
    return out


def markdown(summary: list[dict], meta: dict, args: argparse.Namespace) -> str:
    labels_ = meta["labels"]
    lines = [
        f"Command `{meta['command']}`; {meta['date']}; {meta['machine']}; torch {meta['torch']}; seeds {meta['seeds']}; "
        f"wall time {meta['wall_seconds']:.0f} s (labels: {labels_['seconds_stored'] / 60:.1f} min of evaluations, stored).",
        "",
        f"{labels_['labels']} random prune + bits policies of `{args.zoo}` (original {labels_['metric_original']:.2f} %), "
        f"each fine-tuned {args.finetune_epochs:g} epoch and measured on the validation split (labels: mean "
        f"{labels_['label_mean']:.2f}, std {labels_['label_std']:.2f} points). {args.test} held out for testing, "
        f"{args.pool} in the pool. Kendall τ (mean ± std over seeds) and RMSE (accuracy points) on the test set:",
        "",
        "| selection | predictor | " + " | ".join(f"τ @ {n}" for n in args.sizes) + " | " + " | ".join(f"RMSE @ {n}" for n in args.sizes) + " | fit s |",
        "|---|---|" + "---:|" * (2 * len(args.sizes) + 1),
    ]
    for selection in SELECTIONS:
        for kind in args.kinds:
            cells = [r for r in summary if r["selection"] == selection and r["kind"] == kind]
            taus = " | ".join(f"{r['tau_mean']:.3f} ± {r['tau_std']:.3f}" for r in cells)
            rmses = " | ".join(f"{r['rmse_mean']:.2f}" for r in cells)
            lines.append(f"| {selection} | {kind} | {taus} | {rmses} | {cells[-1]['fit_seconds_median']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(summary: list[dict], args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for kind in args.kinds:
        for selection, style in zip(SELECTIONS, ("-", "--"), strict=True):
            cells = [r for r in summary if r["selection"] == selection and r["kind"] == kind]
            ns = [r["n"] for r in cells]
            axes[0].errorbar(ns, [r["tau_mean"] for r in cells], [r["tau_std"] for r in cells], linestyle=style,
                             marker="o", capsize=3, label=f"{kind}, {selection}")
            axes[1].plot(ns, [r["rmse_mean"] for r in cells], linestyle=style, marker="o", label=f"{kind}, {selection}")
    for ax, label in zip(axes, ("Kendall τ (test)", "RMSE, accuracy points (test)"), strict=True):
        ax.set_xscale("log")
        ax.set_xticks(args.sizes, [str(n) for n in args.sizes])
        ax.set_xlabel("labelled policies")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=120)


if __name__ == "__main__":
    main()
