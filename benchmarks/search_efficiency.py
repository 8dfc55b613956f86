"""Search efficiency: normalized hypervolume against the number of real evaluations, per strategy.

    python benchmarks/search_efficiency.py                      # every default below (~5 x 5 x 40 evaluations)
    python benchmarks/search_efficiency.py --budget 24 --seeds 0 1 2 --strategies random uniform nsga2

Every strategy (random, uniform, greedy, nsga2, genecai, seernet, predicted) searches the pretrained zoo model
``mnist1d-cnn`` (methods prune + low-rank + bits) for ``--budget`` real evaluations, once per
seed; each candidate is evaluated on the validation split after ``--finetune-steps`` steps of
fine-tuning (batch 128; 30 steps is about 1/4 epoch). The objectives are (accuracy, FLOPs) by
default (``--objectives accuracy bitops`` for BitOps).

Resumable: each (strategy, seed) is its own study, named ``<strategy>-seed<seed>``, in one
SQLite file under ``runs/search-efficiency/``. Running the script again re-evaluates nothing
(``autocompress.search.search`` replays a strategy from its stored results), finishes runs
that were cut off (once the candidate a killed run was evaluating is stale: 2 minutes), and
adds strategies or seeds that were not there; a larger ``--budget`` extends the runs. The
results are rewritten after every run, with the list of invocations that produced them.

Hypervolume: the completed and failed candidates of a run are ordered by trial number (a
failed candidate spends an evaluation and adds nothing) and ``hypervolume_curve`` gives the
hypervolume of the first k; it is normalized to [0, 1] by mapping each objective linearly,
reference -> 1 and ideal -> 0, with reference (metric_original - ``--drop`` points, cost
ratio 1) and ideal (metric_original, cost ratio 0); a metric above the original is clipped to
it. A run that stopped before its budget (its strategy was done) keeps its last value. Mean
± sample std over the seeds at every k.

Strategies that are missing from ``autocompress.search.strategies.STRATEGIES``, do not import,
or reject their parameters are skipped with a message; a strategy that fails during its run
is reported and the others go on.

Writes benchmarks/results/search_efficiency.{json,md,png} (``--out``).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results"
STRATEGY_NAMES = ("random", "uniform", "greedy", "nsga2", "genecai", "seernet", "predicted")
COSTS = ("flops", "macs", "params", "bitops", "bytes")
GENE_FIELDS = ("prune", "rank", "weight_bits", "act_bits")


# ------------------------------------------------------------------------- arguments
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGY_NAMES), help="strategies to compare")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="one run per seed and strategy")
    parser.add_argument("--budget", type=int, default=40, help="real evaluations per run")
    parser.add_argument("--objectives", nargs=2, default=["accuracy", "flops"], metavar=("METRIC", "COST"),
                        help="accuracy and one cost (flops, bitops, macs, params, bytes)")
    parser.add_argument("--zoo", default="mnist1d-cnn", help="the zoo model (pretrained)")
    parser.add_argument("--model-seed", type=int, default=0, help="seed of the zoo model and data split (fixed over runs)")
    parser.add_argument("--methods", nargs="+", default=["prune", "lowrank", "quant"], help="compression methods searched")
    parser.add_argument("--finetune-steps", type=int, default=30, help="fine-tune steps per candidate (0: none)")
    parser.add_argument("--split", default="val", choices=["train", "val", "test"], help="split the metric is read on")
    parser.add_argument("--drop", type=float, default=20.0, help="hypervolume reference: metric_original - DROP points")
    parser.add_argument("--workers", type=int, default=1, help="evaluation processes per search")
    parser.add_argument("--threads", type=int, default=None, help="torch threads in this process (default: torch's; 1 is much faster on a busy machine)")
    parser.add_argument("--params", action="append", default=[], metavar="STRATEGY=JSON",
                        help='strategy parameters, e.g. --params \'nsga2={"population": 8}\' (merged over the defaults)')
    parser.add_argument("--storage", default=None,
                        help="SQLite file of the studies (default runs/search-efficiency/<zoo>_<metric>-<cost>_ft<steps>_<split>.db)")
    parser.add_argument("--out", type=Path, default=RESULTS / "search_efficiency", help="results prefix (.json, .md, .png)")
    parser.add_argument("--report-only", action="store_true", help="evaluate nothing: aggregate the stored runs")
    parser.add_argument("--no-timing", action="store_true", help="skip the timing evaluation before the runs")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=sys.stdout.isatty(),
                        help="rich progress bar per run (default: when stdout is a terminal)")
    args = parser.parse_args(argv)
    if args.objectives[0] not in ("accuracy", "metric") or args.objectives[1] not in COSTS:
        parser.error(f"--objectives: give accuracy and one of {', '.join(COSTS)}, got {args.objectives}")
    if args.budget < 1 or args.workers < 1 or args.finetune_steps < 0 or args.drop <= 0:
        parser.error("--budget and --workers must be >= 1, --finetune-steps >= 0, --drop > 0")
    if args.storage is None:
        args.storage = f"runs/search-efficiency/{args.zoo}_{'-'.join(args.objectives)}_ft{args.finetune_steps}_{args.split}.db"
    args.params = parse_params(parser, args.params)
    return args


def parse_params(parser: argparse.ArgumentParser, items: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        name, sep, text = item.partition("=")
        try:
            value = json.loads(text) if sep else None
        except json.JSONDecodeError as error:
            parser.error(f"--params {item!r}: {error}")
        if not isinstance(value, dict):
            parser.error(f"--params {item!r}: expected STRATEGY={{json object}}")
        out.setdefault(name, {}).update(value)
    return out


def resolved_command(args: argparse.Namespace) -> str:
    """The command with every setting spelled out (what reproduces the results)."""
    parts = [
        "python", "benchmarks/search_efficiency.py",
        "--strategies", *args.strategies,
        "--seeds", *map(str, args.seeds),
        "--budget", str(args.budget),
        "--objectives", *args.objectives,
        "--zoo", args.zoo,
        "--model-seed", str(args.model_seed),
        "--methods", *args.methods,
        "--finetune-steps", str(args.finetune_steps),
        "--split", args.split,
        "--drop", f"{args.drop:g}",
        "--workers", str(args.workers),
    ]
    if args.threads:
        parts += ["--threads", str(args.threads)]
    for name, params in args.params.items():
        parts += ["--params", f"{name}={json.dumps(params)}"]
    parts += ["--storage", args.storage]
    return shlex.join(parts)


def strategy_params(name: str, cost: str, extra: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Defaults, except that every cost-aware strategy works on the benchmark's cost objective.

    uniform sweeps prune and rank together (and weight bits when the cost counts bits);
    greedy's targets are ratios of the cost objective.
    """
    base: dict[str, Any] = {}
    if name == "uniform":
        fields = ["prune", "rank"] + (["weight_bits"] if cost in ("bitops", "bytes") else [])
        base = {"fields": fields, "cost": cost}
    elif name == "greedy":
        base = {"target": 0.25, "cost": cost}
    elif name in ("genecai", "seernet", "predicted"):
        base = {"cost": cost}
    return {**base, **extra.get(name, {})}


def available(names: list[str], cost: str, extra: dict[str, dict[str, Any]]) -> tuple[list[str], dict[str, str]]:
    """The strategies that exist and build with their parameters; the others with the reason."""
    from autocompress.search.strategies import STRATEGIES, make_strategy

    ok, skipped = [], {}
    for name in names:
        if name not in STRATEGIES:
            skipped[name] = f"not in the registry (registered: {', '.join(STRATEGIES)})"
            continue
        try:
            make_strategy(name, **strategy_params(name, cost, extra))
        except Exception as error:  # noqa: BLE001 - a strategy still being written must not stop the others
            skipped[name] = f"{type(error).__name__}: {error}"
            continue
        ok.append(name)
    for name, why in skipped.items():
        print(f"skipping strategy {name!r}: {why}", flush=True)
    return ok, skipped


def source_hash(name: str) -> str | None:
    """Hash of a strategy's module and the sibling strategy modules it imports (its code version)."""
    from autocompress.search.strategies import STRATEGIES

    module = STRATEGIES[name].partition(":")[0]
    seen, todo, digest = set(), [module], hashlib.sha1()
    while todo:
        current = todo.pop()
        spec = importlib.util.find_spec(current)
        if current in seen or spec is None or not spec.origin:
            continue
        seen.add(current)
        text = Path(spec.origin).read_text()
        digest.update(f"{current}\n{text}".encode())
        todo += re.findall(r"from (autocompress\.search\.strategies\.\w+) import", text)
    return digest.hexdigest()[:12] if seen else None


def git_state() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True).stdout.strip()
        return commit + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# ------------------------------------------------------------------------- studies
def study_name(strategy: str, seed: int) -> str:
    return f"{strategy}-seed{seed}"


def open_existing(storage: str, name: str):
    """The stored study ``name``, or None."""
    from autocompress.search.study import Study

    if not Path(storage).exists():
        return None
    try:
        return Study.open(storage, name, create=False)
    except ValueError:
        return None


def settings_of(args: argparse.Namespace, strategy: str) -> dict[str, Any]:
    """What the stored results depend on (a resumed study must have been made with the same)."""
    return {
        "zoo": args.zoo,
        "model_seed": args.model_seed,
        "methods": list(args.methods),
        "objectives": list(args.objectives),
        "finetune_steps": args.finetune_steps,
        "split": args.split,
        "strategy_params": strategy_params(strategy, args.objectives[1], args.params),
    }


def used(study) -> int:
    """Real evaluations a study has spent (complete and failed candidates)."""
    return sum(1 for r in study.records() if r.state in ("complete", "failed"))


def queued(study) -> int:
    """Candidates still queued or running (left by a killed run; the study is not done with them)."""
    return sum(1 for r in study.records() if r.state in ("waiting", "running"))


def is_done(study, budget: int) -> bool:
    return bool(study.meta.get("finished")) and int(study.meta.get("budget", 0)) >= budget and not queued(study)


def remaining(args: argparse.Namespace, strategy: str, seed: int) -> int:
    study = open_existing(args.storage, study_name(strategy, seed))
    if study is None:
        return args.budget
    if is_done(study, args.budget):
        return 0
    return max(0, args.budget - used(study))


def check_settings(args: argparse.Namespace, strategy: str, seed: int) -> None:
    study = open_existing(args.storage, study_name(strategy, seed))
    if study is None:
        return
    stored = study.meta.get("benchmark")
    wanted = settings_of(args, strategy)
    if stored is not None and stored != wanted:
        diff = {k: (stored.get(k), v) for k, v in wanted.items() if stored.get(k) != v}
        raise SystemExit(
            f"study {study_name(strategy, seed)!r} in {args.storage} was made with other settings "
            f"(stored, wanted): {diff}; pass another --storage"
        )


def run_one(args: argparse.Namespace, strategy: str, seed: int, model, task, space) -> bool:
    """Run (or resume) one study (a failing strategy is reported, not raised); False if it was already done."""
    from autocompress.search import search
    from autocompress.search.study import Study

    name = study_name(strategy, seed)
    check_settings(args, strategy, seed)
    existing = open_existing(args.storage, name)
    if existing is not None and is_done(existing, args.budget):
        print(f"{name}: finished earlier ({used(existing)} evaluations), nothing to do", flush=True)
        return False
    start = time.perf_counter()
    print(f"{name}: running (budget {args.budget}, {used(existing) if existing else 0} done before)", flush=True)
    # the settings go in first, so that a run killed midway is only ever resumed with the same ones
    Study.open(args.storage, name, objectives=args.objectives).set_meta(
        benchmark=settings_of(args, strategy), benchmark_source=source_hash(strategy)
    )
    try:
        study = search(
            model,
            task,
            space,
            objectives=args.objectives,
            strategy=strategy,
            strategy_params=strategy_params(strategy, args.objectives[1], args.params),
            budget=args.budget,
            storage=args.storage,
            study_name=name,
            seed=seed,
            workers=args.workers,
            evaluator={"finetune_steps": args.finetune_steps or None, "finetune_epochs": 0.0, "split": args.split},
            progress=args.progress,
        )
    except Exception as error:  # noqa: BLE001 - one failing strategy must not stop the benchmark
        text = f"{type(error).__name__}: {error}"
        print(f"{name}: FAILED after {time.perf_counter() - start:.0f} s: {text}", flush=True)
        traceback.print_exc()
        Study.open(args.storage, name, objectives=args.objectives).set_meta(benchmark_error=text)
        return True
    study.set_meta(benchmark_error=None)
    records = study.records()
    failed = sum(1 for r in records if r.state == "failed")
    left = queued(study)
    print(
        f"{name}: done in {time.perf_counter() - start:.0f} s, {used(study)} evaluations ({failed} failed)"
        + (f"; {left} candidate(s) left queued or running by a killed earlier run were not evaluated, so the run "
           "is left out of the results (if the kill was less than 2 minutes ago, run the script again later)" if left else ""),
        flush=True,
    )
    return True


def time_one_evaluation(args: argparse.Namespace, model, task, space) -> dict[str, float]:
    """Seconds of one real evaluation (a random policy of seed 0), measured as the searches do it."""
    from autocompress.evaluate import Evaluator

    evaluator = Evaluator(task, finetune_steps=args.finetune_steps or None, split=args.split, seed=0, device="auto")
    start = time.perf_counter()
    evaluator.baseline(model)
    baseline = time.perf_counter() - start
    policy = space.random_policy(np.random.default_rng(0))
    start = time.perf_counter()
    result = evaluator.evaluate(model, policy, space=space)
    seconds = time.perf_counter() - start
    return {"baseline_seconds": round(baseline, 2), "seconds": round(seconds, 2),
            **{f"{k}_seconds": round(v, 2) for k, v in result.times.items()}}


# ------------------------------------------------------------------------- hypervolume
def run_curve(study, cost: str, drop: float, budget: int) -> dict[str, Any]:
    """Normalized hypervolume of the first k evaluations, k = 1..budget, and the run's records."""
    from autocompress.search.pareto import hypervolume_curve

    records = sorted((r for r in study.records() if r.state in ("complete", "failed")), key=lambda r: r.number)
    records = records[:budget]
    original = float(study.meta["original"]["metric"])
    ratio = f"{cost}_ratio"
    points = np.full((len(records), 2), np.nan)
    for i, r in enumerate(records):
        if r.ok:
            # minimization in the unit box: ideal (metric_original, ratio 0) -> 0, reference -> 1
            points[i] = [max(0.0, (original - r.values["metric"]) / drop), max(0.0, r.values[ratio])]
    inside = int(np.sum(np.isfinite(points).all(axis=1) & (points < 1.0).all(axis=1)))
    curve = hypervolume_curve(points, [1.0, 1.0], ["minimize", "minimize"]) if len(records) else np.zeros(0)
    padded = np.zeros(budget)
    padded[: len(curve)] = curve
    if 0 < len(curve) < budget:
        padded[len(curve):] = curve[-1]
    return {
        "metric_original": original,
        "evaluations": len(records),
        "in_box": inside,
        "queued": queued(study),
        "failed": sum(1 for r in records if r.state == "failed"),
        "errors": sorted({r.error for r in records if r.error}),
        "seconds_per_evaluation": float(np.mean([r.seconds for r in records])) if records else None,
        "curve": [round(float(v), 6) for v in padded],
        "records": [
            {
                "number": r.number,
                "state": r.state,
                "metric": rounded(r.values.get("metric"), 4),
                "metric_before_finetune": rounded(r.values.get("metric_before_finetune"), 4),
                **{f"{k}_ratio": rounded(r.values.get(f"{k}_ratio"), 6) for k in ("flops", "bitops", "params")},
                "seconds": round(r.seconds, 2),
                "tags": r.tags,
                "error": r.error,
                "genes": {name: [getattr(g, f) for f in GENE_FIELDS] for name, g in r.policy.layers.items()},
            }
            for r in records
        ],
    }


def rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def checkpoints(budget: int) -> list[int]:
    return sorted({max(1, budget // 4), max(1, budget // 2), budget})


def aggregate(args: argparse.Namespace, strategies: list[str]) -> tuple[list[dict], dict[str, dict]]:
    """Per-run curves of the finished runs, and per strategy mean/std curves."""
    runs, summary = [], {}
    for strategy in strategies:
        curves = []
        for seed in args.seeds:
            study = open_existing(args.storage, study_name(strategy, seed))
            if study is None or "original" not in study.meta:
                continue
            finished = is_done(study, args.budget)
            run = {"strategy": strategy, "seed": seed, "study": study_name(strategy, seed), "finished": finished,
                   "error": study.meta.get("benchmark_error"), "source": study.meta.get("benchmark_source"),
                   "source_now": source_hash(strategy),
                   **run_curve(study, args.objectives[1], args.drop, args.budget)}
            runs.append(run)
            if finished:
                curves.append(run["curve"])
        if not curves:
            continue
        array = np.array(curves)
        std = array.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(array.shape[1])
        done = [r for r in runs if r["strategy"] == strategy and r["finished"]]
        per_eval = [r["seconds_per_evaluation"] for r in done if r["seconds_per_evaluation"] is not None]
        summary[strategy] = {
            "seeds": [r["seed"] for r in done],
            "mean": array.mean(axis=0).round(6).tolist(),
            "std": std.round(6).tolist(),
            "at": {str(k): {"mean": float(array[:, k - 1].mean()), "std": float(std[k - 1])} for k in checkpoints(args.budget)},
            "evaluations": [r["evaluations"] for r in done],
            "in_box": sum(r["in_box"] for r in done) / max(1, sum(r["evaluations"] for r in done)),
            "failed": sum(r["failed"] for r in done),
            "seconds_per_evaluation": float(np.mean(per_eval)) if per_eval else None,
        }
    reach_nsga2(runs, summary)
    return runs, summary


def reach_nsga2(runs: list[dict], summary: dict[str, dict]) -> None:
    """Per strategy: real evaluations each finished run needs to reach NSGA-II's mean HV at the full budget."""
    if "nsga2" not in summary:
        return
    target = summary["nsga2"]["mean"][-1]
    for name, s in summary.items():
        needed = []
        for r in runs:
            if r["strategy"] == name and r["finished"]:
                k = next((i + 1 for i, v in enumerate(r["curve"]) if v >= target - 1e-12), None)
                needed.append(k)
        reached = sorted(k for k in needed if k is not None)
        s["to_nsga2"] = {"target": target, "per_run": needed,
                         "median": float(np.median(reached)) if len(reached) == len(needed) and reached else None,
                         "reached": len(reached), "runs": len(needed)}


# ------------------------------------------------------------------------- output
def markdown(meta: dict, summary: dict[str, dict], runs: list[dict]) -> str:
    ks = checkpoints(meta["settings"]["budget"])
    runs_text = [
        f"`{h['command']}` ({h['date']}, {h['wall_seconds'] / 60:.1f} min, machine {h['machine']}, git {h['git']})"
        for h in meta["invocations"]
    ]
    lines = [
        f"Command: `{meta['command']}` (resumable: it reproduces every run below from scratch, or re-evaluates nothing).",
        "",
        f"Seeds {' '.join(map(str, meta['settings']['seeds']))}; python {meta['python']}, torch {meta['torch']}; "
        f"evaluation time summed over the runs {meta['evaluation_seconds_all_runs'] / 60:.1f} min, wall time "
        f"{sum(h['wall_seconds'] for h in meta['invocations']) / 60:.1f} min over {len(runs_text)} invocation(s):",
        "",
        *(f"- {t}" for t in runs_text),
        "",
        f"Normalized hypervolume of ({meta['settings']['objectives'][0]}, {meta['settings']['objectives'][1]}) "
        f"after k real evaluations on `{meta['settings']['zoo']}` (validation split, "
        f"{meta['settings']['finetune_steps']} fine-tune steps per candidate): objectives mapped to [0, 1] with "
        f"reference (metric_original - {meta['settings']['drop']:g} points, {meta['settings']['objectives'][1]} ratio 1) "
        "and ideal (metric_original, ratio 0); mean ± sample std over the seeds. \"in the box\": share of the "
        "evaluated candidates inside the reference box (within the drop of the original metric and below ratio 1).",
        "",
        "Strategy parameters (the strategies' defaults otherwise): "
        + "; ".join(f"{name} `{json.dumps(p)}`" for name, p in meta["settings"]["strategy_params"].items() if p)
        + f". Methods searched: {', '.join(meta['settings']['methods'])}; evaluator seed = run seed; "
        f"model `{meta['settings']['zoo']}` of seed {meta['settings']['model_seed']} for every run.",
        "",
        "| strategy | runs | " + " | ".join(f"HV @ {k}" for k in ks)
        + " | evaluations used | in the box | failed | s / evaluation | evaluations to NSGA-II's HV @ budget (median; per run) |",
        "|---|---:|" + "---:|" * len(ks) + "---:|---:|---:|---:|---:|",
    ]
    for name, s in summary.items():
        cells = [f"{s['at'][str(k)]['mean']:.3f} ± {s['at'][str(k)]['std']:.3f}" for k in ks]
        used_text = "/".join(str(e) for e in s["evaluations"])
        per_eval = "–" if s["seconds_per_evaluation"] is None else f"{s['seconds_per_evaluation']:.1f}"
        reach = s.get("to_nsga2")
        if reach is None:
            reach_text = "–"
        else:
            per_run = "/".join("–" if k is None else str(k) for k in reach["per_run"])
            median = f"{reach['median']:g}" if reach["median"] is not None else f"reached in {reach['reached']}/{reach['runs']}"
            reach_text = f"{median} ({per_run})"
        lines.append(f"| {name} | {len(s['seeds'])} | " + " | ".join(cells)
                     + f" | {used_text} | {100 * s['in_box']:.0f} % | {s['failed']} | {per_eval} | {reach_text} |")
    notes = []
    for name, why in meta["skipped"].items():
        notes.append(f"- {name}: skipped ({why})")
    budget = meta["settings"]["budget"]
    for name, s in summary.items():
        if any(e < budget for e in s["evaluations"]):
            notes.append(f"- {name}: the strategy was done after {'/'.join(map(str, s['evaluations']))} of {budget} "
                         "evaluations; its curve stays flat from there")
    for r in runs:
        if r["error"]:
            notes.append(f"- {r['study']}: the strategy failed: {r['error']}")
        elif r["source"] and r["source"] != r["source_now"]:
            notes.append(f"- {r['study']}: ran with another version of the strategy's code ({r['source']}, now {r['source_now']})")
        if not r["error"] and not r["finished"]:
            notes.append(f"- {r['study']}: not finished ({r['evaluations']} of {meta['settings']['budget']} evaluations, "
                         f"{r['queued']} queued), left out")
        if r["failed"]:
            notes.append(f"- {r['study']}: {r['failed']} failed candidate(s): {'; '.join(r['errors'])[:300]}")
    if notes:
        lines += ["", "Notes:", "", *notes]
    lines += ["", "Per run (normalized HV at the checkpoints):", "",
              "| run | " + " | ".join(f"@ {k}" for k in ks) + " | evaluations | finished |",
              "|---|" + "---:|" * len(ks) + "---:|---|"]
    for r in runs:
        lines.append(f"| {r['study']} | " + " | ".join(f"{r['curve'][k - 1]:.3f}" for k in ks)
                     + f" | {r['evaluations']} | {'yes' if r['finished'] else 'no'} |")
    return "\n".join(lines) + "\n"


def write_results(args: argparse.Namespace, meta: dict, strategies: list[str], start: float) -> None:
    from autocompress.search.plot import plot_curves

    runs, summary = aggregate(args, strategies)
    json_path = args.out.with_suffix(".json")
    this = {k: meta[k] for k in ("command", "date", "machine", "git", "evaluations_to_do") if k in meta}
    this.update(timing=meta.get("timing"), wall_seconds=round(time.perf_counter() - start, 1))
    out = {**meta, "wall_seconds": this["wall_seconds"], "invocations": [*previous_invocations(json_path, args, meta), this],
           "evaluation_seconds_all_runs": round(sum(rec["seconds"] for r in runs for rec in r["records"]), 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(compact_json({"meta": out, "summary": summary, "runs": runs}))
    args.out.with_suffix(".md").write_text(markdown(out, summary, runs))
    if summary:
        cost = args.objectives[1]
        curves = {
            f"{name} (n={len(s['seeds'])})": (np.arange(1, args.budget + 1), np.array(s["mean"]), np.array(s["std"]))
            for name, s in summary.items()
        }
        png = plot_curves(
            curves,
            x_label="real evaluations",
            y_label=f"normalized hypervolume (accuracy, {cost} ratio)",
            path=args.out.with_suffix(".png"),
            title=f"{args.zoo}: search efficiency (mean ± std over seeds)",
        )
        png.chmod(0o644)  # written through a private temporary file
    print(f"wrote {json_path.with_suffix('.md')} ({len(summary)} strategies, {len(runs)} runs)", flush=True)


def compact_json(data: Any) -> str:
    """Indented JSON with every list of numbers on one line (curves, genes)."""
    text = json.dumps(data, indent=1)
    numbers = r"\[\s*(-?[\d.eE+-]+(?:,\s*-?[\d.eE+-]+)*)\s*\]"
    return re.sub(numbers, lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)


def previous_invocations(path: Path, args: argparse.Namespace, meta: dict) -> list[dict]:
    """The invocations that evaluated the stored runs before this one (from the results file of the same storage)."""
    try:
        old = json.loads(path.read_text())["meta"]
    except (OSError, ValueError, KeyError):
        return []
    if old.get("settings", {}).get("storage") != args.storage:
        return []
    history = old.get("invocations") or [{k: old.get(k) for k in ("command", "date", "machine", "git", "timing", "wall_seconds")}]
    return [h for h in history if (h.get("date"), h.get("command")) != (meta["date"], meta["command"])
            and (h.get("evaluations_to_do") or (h.get("timing") or {}).get("evaluations_to_do"))]


def machine() -> str:
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return (f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
            f"{platform.processor() or 'cpu'}{load} at start")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    from autocompress.space import SearchSpace
    from autocompress.zoo import load_zoo

    strategies, skipped = available(args.strategies, args.objectives[1], args.params)
    meta: dict[str, Any] = {
        "command": "python benchmarks/search_efficiency.py" + "".join(f" {shlex.quote(a)}" for a in (argv or sys.argv[1:])),
        "command_resolved": resolved_command(args),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "python": platform.python_version(),
        "git": git_state(),
        "strategy_sources": {s: source_hash(s) for s in strategies},
        "torch": torch.__version__,
        "settings": {**{k: v for k, v in vars(args).items() if k not in ("out", "params", "progress")},
                     "strategy_params": {s: strategy_params(s, args.objectives[1], args.params) for s in strategies},
                     "storage": args.storage,
                     "hypervolume": {"reference": f"(metric_original - {args.drop:g}, {args.objectives[1]}_ratio 1.0)",
                                     "ideal": f"(metric_original, {args.objectives[1]}_ratio 0.0)",
                                     "std": "sample std (ddof=1) over seeds"}},
        "skipped": skipped,
    }
    for strategy in strategies:
        for seed in args.seeds:
            check_settings(args, strategy, seed)

    todo = {(s, seed): remaining(args, s, seed) for seed in args.seeds for s in strategies}
    total = sum(todo.values())
    meta["evaluations_to_do"] = total
    print(f"strategies {strategies}, seeds {args.seeds}, budget {args.budget}: {total} evaluations to do "
          f"(storage {args.storage})", flush=True)
    if args.report_only or total == 0:
        write_results(args, meta, strategies, start)
        return

    zoo = load_zoo(args.zoo, pretrained=True, seed=args.model_seed, progress=args.progress)
    space = SearchSpace.from_model(zoo.model, zoo.task.example_input(), methods=args.methods)
    print(f"{args.zoo}: {len(space.genes)} genes over {len(space.layers)} layers; methods {args.methods}", flush=True)
    if not args.no_timing:
        timing = time_one_evaluation(args, zoo.model, zoo.task, space)
        expected = total * timing["seconds"] / args.workers
        meta["timing"] = {**timing, "evaluations_to_do": total, "expected_seconds": round(expected)}
        print(f"one evaluation: {timing['seconds']:.1f} s ({timing}); {total} evaluations -> about "
              f"{expected / 60:.0f} min with {args.workers} worker(s)", flush=True)

    for seed in args.seeds:  # seeds outside: an interrupted benchmark has every strategy on the first seeds
        for strategy in strategies:
            if run_one(args, strategy, seed, zoo.model, zoo.task, space):
                write_results(args, meta, strategies, start)
    print(f"total {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
