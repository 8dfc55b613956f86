"""APQ under latency budgets: int8-aware lookup tables, then the joint search against the staged one.

    python benchmarks/apq_latency.py --threads 2                       # section table (~5 min)
    python benchmarks/apq_latency.py --threads 2 --sections search     # ~10 min per supernet

Everything is timed on ONNX Runtime's CPU provider (target ``ort-cpu``: 1 thread, batch 32) as
the model is deployed: a sub-network whose layers are fake-quantized at 8 bits or fewer runs them
in static int8 (``autocompress.export.export_int8``: QDQ, fused by ONNX Runtime into QLinearConv),
the others in fp32.

Section ``table``: how well the lookup table predicts that. A fresh table (its own file under
``--runs``) is calibrated for the largest sub-network of the MNIST-1D supernet of
``benchmarks/apq.py`` (``ElasticSpace.calibrate_latency``: 8 random sub-networks, each stage int8 or
fp32 at random, measured whole); then ``--held-out`` other random sub-networks, each at three
precisions (every stage fp32, every stage int8, stages at random), are estimated and measured
whole (each the median of ``--rounds`` round-robin measurements, each the median of the target's
repeats). Reported: median |estimate / measured - 1| and Spearman / Kendall rank correlation,
overall and per precision, and the same for the table before int8 entries (every layer looked up
as fp32), against the same measurements.

Section ``search``: ``apq`` (joint) and ``apq`` with ``pipeline="staged"`` (architecture at the
highest bits, then bits) search (accuracy, latency) under latency budgets (``--targets``, ratios
of the largest sub-network's fp32 latency) with bits 4 / 6 / 8 / 32 per stage, 40 real evaluations
each (20 quantization-aware steps), as in ``benchmarks/apq.py``'s search section; then each arm's
best candidate per budget (by validation accuracy, within the budget by the table) is deployed and
its latency measured whole, so that the comparison is at measured, equal latency.

Writes benchmarks/results/apq_latency[_search].{json,md} (``--out``).
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
from scipy.stats import kendalltau, spearmanr

from autocompress.apply import apply_policy
from autocompress.elastic import ElasticSpace, QuantSubnet, subnet_metric
from autocompress.hardware.lut import LatencyTable
from autocompress.hardware.targets import Target, measure
from autocompress.zoo import load_task

sys.path.insert(0, str(Path(__file__).parent))
from apq import finished_within, supernet_for  # noqa: E402  (the supernet of benchmarks/apq.py)

RESULTS = Path(__file__).parent / "results"
PRECISIONS = ("fp32", "int8", "mixed")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", default=["table"], choices=["table", "search"])
    parser.add_argument("--seed", type=int, default=0, help="the supernet (benchmarks/apq.py --seed) and the draws")
    parser.add_argument("--epochs", type=float, default=10.0, help="the supernet's (benchmarks/apq.py)")
    parser.add_argument("--sandwich", type=int, default=2, help="the supernet's (benchmarks/apq.py)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (training, labels); ORT runs 1")
    parser.add_argument("--held-out", type=int, default=20, help="section table: random sub-networks")
    parser.add_argument("--rounds", type=int, default=3, help="round-robin measurements per model")
    parser.add_argument("--targets", type=float, nargs="+", default=[0.25, 0.12, 0.06],
                        help="section search: latency ratios of the largest sub-network (fp32)")
    parser.add_argument("--bits", type=int, nargs="+", default=[4, 6, 8, 32], help="section search: bit choices")
    parser.add_argument("--fp-labels", type=int, default=300)
    parser.add_argument("--search-budget", type=int, default=40)
    parser.add_argument("--qat-steps", type=int, default=20)
    parser.add_argument("--wall-seconds", type=float, default=None)
    parser.add_argument("--runs", type=Path, default=Path("runs/apq"))
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args(argv)


TARGET = Target("ort-cpu", threads=1, batch=32, repeats=50)


def quantized(elastic: ElasticSpace, candidate: QuantSubnet) -> torch.nn.Module:
    """The candidate's fake-quantized sub-network (what the int8 file is made from)."""
    model = elastic.supernet.extract(candidate.config).eval()
    return apply_policy(model, elastic.policy(candidate), elastic.example)


def measure_round_robin(models: list[torch.nn.Module], example: torch.Tensor, rounds: int) -> list[float]:
    """Median over ``rounds`` round-robin passes of each model's whole latency (ms per batch of 32)."""
    times = [[] for _ in models]
    for _ in range(rounds):
        for i, model in enumerate(models):
            times[i].append(measure(model, example, TARGET).median_ms)
    return [float(np.median(t)) for t in times]


def errors(estimated: list[float], measured: list[float]) -> dict:
    e, m = np.array(estimated), np.array(measured)
    return {"median_abs_rel_error": float(np.median(np.abs(e / m - 1))), "max_abs_rel_error": float(np.max(np.abs(e / m - 1))),
            "spearman": float(spearmanr(e, m)[0]), "kendall": float(kendalltau(e, m)[0]), "models": len(m)}


def table_section(elastic: ElasticSpace, args: argparse.Namespace) -> dict:
    path = args.runs / f"latency-table-{os.getpid()}.json"
    table = LatencyTable.open(TARGET, path)
    start = time.perf_counter()
    elastic.calibrate_latency(table)
    calibrated = time.perf_counter() - start
    rng = np.random.default_rng([args.seed, 7])
    candidates, kinds = [], []
    for _ in range(args.held_out):
        config = elastic.supernet.random(rng)
        stages = len(config.stages)
        mixed = tuple((8, 8) if rng.random() < 0.5 else (32, 32) for _ in range(stages))
        for kind, bits in zip(PRECISIONS, [((32, 32),) * stages, ((8, 8),) * stages, mixed], strict=True):
            candidates.append(QuantSubnet(config, bits))
            kinds.append(kind)
    estimated = [elastic.latency_ms(c, table) for c in candidates]
    as_fp32 = [elastic.latency_ms(c.config, table) for c in candidates]  # before int8 entries: every layer fp32
    table_seconds = time.perf_counter() - start
    measured = measure_round_robin([quantized(elastic, c) for c in candidates], elastic.example, args.rounds)
    largest = elastic.supernet.largest()
    ends = [QuantSubnet(largest, ((32, 32),) * len(largest.stages)), QuantSubnet(largest, ((8, 8),) * len(largest.stages))]
    end_ms = measure_round_robin([quantized(elastic, c) for c in ends], elastic.example, max(args.rounds, 5))
    rows = [{"arch": [float(v) for v in c.config.to_vector()], "bits": [list(b) for b in c.bits], "precision": k,
             "estimated_ms": e, "as_fp32_ms": f, "measured_ms": m}
            for c, k, e, f, m in zip(candidates, kinds, estimated, as_fp32, measured, strict=True)]
    summary = {"all": {"int8 table": errors(estimated, measured), "fp32 table": errors(as_fp32, measured)}}
    for kind in PRECISIONS:
        pick = [i for i, k in enumerate(kinds) if k == kind]
        summary[kind] = {"int8 table": errors([estimated[i] for i in pick], [measured[i] for i in pick]),
                         "fp32 table": errors([as_fp32[i] for i in pick], [measured[i] for i in pick])}
    coefficients = next(iter(table.overheads.values()))
    path.unlink(missing_ok=True)
    return {"rows": rows, "summary": summary, "coefficients": coefficients, "entries": len(table.entries),
            "calibration_seconds": calibrated, "table_seconds": table_seconds,
            "largest_fp32_ms": end_ms[0], "largest_int8_ms": end_ms[1]}


def warm_table(elastic: ElasticSpace, table: LatencyTable) -> float:
    """Time every layer configuration the supernet has (each stage's first block after each width of the
    stage before, the others; each kernel; fp32 and int8) before the arms run, so that neither arm pays
    for the table's first timings. Returns the seconds it took."""
    start = time.perf_counter()
    choices = elastic.supernet.choices()
    largest = elastic.supernet.largest().to_vector().reshape(-1, 3)
    for stage in range(len(choices)):
        for before in choices[max(stage - 1, 0)]["width"]:
            for width in choices[stage]["width"]:
                for kernel in choices[stage]["kernel"]:
                    arch = largest.copy()
                    arch[stage] = (max(choices[stage]["depth"]), width, kernel)
                    if stage > 0:
                        arch[stage - 1, 1] = before
                    config = elastic.config(arch.ravel())
                    for bits in ((32, 32), (8, 8)):
                        elastic.latency_ms(QuantSubnet(config, (bits,) * len(choices)), table)
    return time.perf_counter() - start


def search_section(supernet, elastic: ElasticSpace, task, args: argparse.Namespace) -> dict:  # noqa: ANN001
    from autocompress.search import Study, search
    from autocompress.search.strategies.apq import APQStrategy

    storage = args.runs / "search.db"
    targets = [f"latency_ratio<={t:g}" for t in args.targets]
    bits = "-".join(map(str, args.bits))
    latency = {"estimate": True, "runtime": "ort-cpu", "threads": 1, "batch": 32, "repeats": 50}
    table = LatencyTable.open(TARGET)  # the search's (cached per machine): its calibration is the estimates'
    reference_ms = elastic.reference_latency_ms(table)
    warm_seconds = warm_table(elastic, table)
    print(f"lookup table: {len(table.entries)} entries ({warm_seconds:.0f} s to fill)", flush=True)
    studies, rows = {}, []
    for arm in ("apq", "staged"):
        name = f"{arm}-latency-b{bits}-seed{args.seed}-e{args.epochs:g}-b{args.search_budget}-qat{args.qat_steps}"
        study = Study.open(storage, name, objectives=["accuracy", "latency"])
        if "seconds" not in study.meta:
            start = time.time()
            study.set_meta(started=start)
            strategy = APQStrategy(targets=targets, fp_samples=args.fp_labels, final=2, weight_bits=args.bits,
                                   act_bits=args.bits, pipeline="staged" if arm == "staged" else "joint",
                                   q_samples=max(0, args.search_budget - 2 * len(targets)))
            search(elastic.reference, task, strategy=strategy, elastic=supernet, objectives=["accuracy", "latency"],
                   latency=latency, budget=args.search_budget, storage=storage, study_name=name, seed=args.seed,
                   finetune_epochs=0, evaluator={"finetune_steps": args.qat_steps}, progress=False)
            study.set_meta(seconds=time.time() - start)
        studies[arm] = study
        print(f"{arm}: {len(study.completed())} evaluations in {study.meta['seconds']:.0f} s", flush=True)
    spent = [s for s in studies.values() if len(s.completed()) >= args.search_budget] or list(studies.values())
    horizon = args.wall_seconds or min(s.meta["seconds"] for s in spent)  # as benchmarks/apq.py: an arm that stopped early does not set it
    chosen = []  # (arm, target, record): each arm's best within each budget by the table
    for arm, study in studies.items():
        within = finished_within(study, horizon)
        for target in args.targets:
            fits = [r for r in within if r.values["latency_ms"] <= target * reference_ms]
            chosen.append((arm, target, max(fits, key=lambda r: r.values["metric"], default=None)))
    models = [quantized(elastic, elastic.candidate(r.policy)) for _, _, r in chosen if r is not None]
    measured = iter(measure_round_robin(models, elastic.example, args.rounds))
    for arm, target, record in chosen:
        row = {"arm": arm, "target": target, "evaluations": len(studies[arm].completed()),
               "seconds": studies[arm].meta["seconds"]}
        if record is not None:
            row |= {"metric": record.values["metric"], "estimated_ms": record.values["latency_ms"],
                    "measured_ms": next(measured), "bits": sorted({(g.weight_bits, g.act_bits) for g in record.policy.layers.values()}),
                    "arch": list(record.policy.arch)}
        rows.append(row)
    return {"horizon": horizon, "reference_ms": reference_ms, "rows": rows, "table_entries": len(table.entries),
            "metric_original": float(studies["apq"].meta["original"]["metric"])}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    task = load_task("mnist1d", seed=args.seed)
    start = time.perf_counter()
    supernet, _ = supernet_for(args, task)
    _, reference = subnet_metric(supernet, supernet.largest(), task, seed=args.seed)
    elastic = ElasticSpace(supernet, task, reference=reference)
    result = {"command": "python benchmarks/apq_latency.py " + shlex.join(sys.argv[1:] if argv is None else argv),
              "date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start", "torch": torch.__version__,
              "onnxruntime": __import__("onnxruntime").__version__, "settings": {k: str(v) for k, v in vars(args).items()}}
    if "table" in args.sections:
        result["table"] = table_section(elastic, args)
    if "search" in args.sections:
        result["search"] = search_section(supernet, elastic, task, args)
    result["seconds"] = time.perf_counter() - start
    out = args.out or RESULTS / ("apq_latency" if args.sections == ["table"] else f"apq_latency_search_seed{args.seed}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    out.with_suffix(".md").write_text(markdown(result, args))
    print(markdown(result, args))


def markdown(result: dict, args: argparse.Namespace) -> str:
    lines = ["# APQ under latency budgets: int8-aware lookup tables (ONNX Runtime CPU)", "",
             f"`{result['command']}`; {result['date']}; seed {args.seed}; {result['machine']}; torch {result['torch']}, "
             f"onnxruntime {result['onnxruntime']}; target {TARGET.name}; {result['seconds']:.0f} s.", ""]
    if "table" in result:
        t = result["table"]
        k = t["coefficients"]
        lines += ["## Lookup table against whole-model measurements", "",
                  f"{args.held_out} random sub-networks of the MNIST-1D supernet, each with every stage fp32, every stage "
                  f"int8, and stages at random ({len(t['rows'])} models), measured whole as deployed (median of "
                  f"{args.rounds} round-robin passes). Largest sub-network measured: fp32 {t['largest_fp32_ms']:.2f} ms, "
                  f"int8 {t['largest_int8_ms']:.2f} ms per batch of 32 ({t['largest_fp32_ms'] / t['largest_int8_ms']:.2f}× "
                  f"faster in int8). Calibration (8 sub-networks): scale {k['scale']:.2f}, int8 scale "
                  f"{k['scale_int8']:.2f}, per-call share {k['per_call']:.2f}, overhead {k['overhead_ms']:.3f} ms, fit error "
                  f"{100 * k['calibration_error']:.1f} %. Table: {t['entries']} layer entries, calibrated in "
                  f"{t['calibration_seconds']:.0f} s, every estimate in {t['table_seconds']:.0f} s in all.", "",
                  "| models | table | median \\|error\\| | max \\|error\\| | Spearman | Kendall τ |", "|---|---|---:|---:|---:|---:|"]
        for group, tables in t["summary"].items():
            for name, e in tables.items():
                lines.append(f"| {group} ({e['models']}) | {name} | {100 * e['median_abs_rel_error']:.1f} % | "
                             f"{100 * e['max_abs_rel_error']:.0f} % | {e['spearman']:.3f} | {e['kendall']:.3f} |")
        lines += ["", "\"fp32 table\": every layer looked up as fp32 (the tables before int8 entries), against the same "
                  "measurements of the deployed files."]
    if "search" in result:
        s = result["search"]
        lines += ["", "## Joint vs staged under latency budgets", "",
                  f"Largest sub-network: validation accuracy {s['metric_original']:.2f}, estimated {s['reference_ms']:.2f} ms "
                  f"(fp32). Bits per stage from {args.bits}; {args.search_budget} evaluations per arm, "
                  f"{args.qat_steps} quantization-aware steps each; candidates finished within {s['horizon']:.0f} s of "
                  "each arm's start. Best validation accuracy within each budget (by the table), then deployed and "
                  f"measured whole ({args.rounds} round-robin passes):", "",
                  "| arm | latency ≤ | best accuracy | estimated ms | measured ms | measured / budget | bits used |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for row in s["rows"]:
            budget = row["target"] * s["reference_ms"]
            if "metric" not in row:
                lines.append(f"| {row['arm']} | {row['target']:g} ({budget:.2f} ms) | – | | | | |")
                continue
            bits = ", ".join(f"{w}/{a}" for w, a in row["bits"])
            lines.append(f"| {row['arm']} | {row['target']:g} ({budget:.2f} ms) | {row['metric']:.2f} | "
                         f"{row['estimated_ms']:.2f} | {row['measured_ms']:.2f} | {row['measured_ms'] / budget:.2f} | {bits} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
