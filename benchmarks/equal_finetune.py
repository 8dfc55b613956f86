"""Is it the policy or the budget split? ``compress``'s policies against Torch-Pruning's at equal fine-tune.

    python benchmarks/equal_finetune.py --archs mobilenet-v2 vit --seeds 0 1 2 --target 0.5

``benchmarks/user_models.py`` compares what ``compress`` delivers with Torch-Pruning's uniform prune at
equal *total* training: Torch-Pruning trains its one model for every step ``compress`` spent
(learning-rate trials, 19 short candidates, the final fine-tune), while ``compress``'s delivered model
gets only its final fine-tune (1,200 of 4,600-5,800 steps on digits). This script separates the two
causes, on the studies and pretrained models that ``user_models.py`` stored (``--out``; nothing is
searched again):

- **compress-search** — the best searched (non-uniform) finalist's policy of ``compress``;
- **compress-uniform** — ``compress``'s uniform policy at the target (its learning-rate trial);
- both fine-tuned for the cell's *total* steps at ``compress``'s final learning rate (what Torch-Pruning got);
- **tp-uniform@final** — Torch-Pruning's model of the cell (same ratio) fine-tuned for only ``compress``'s
  final fine-tune's steps (what ``compress``'s delivered model got).

Every file is fp32 ONNX, its test accuracy and its latency measured side by side with the original in
one ONNX Runtime run (1 thread, batch 32, medians); the cell's own figures (compress's delivered file and
Torch-Pruning's at the total steps) are quoted from ``benchmarks/results/user_models/``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import autocompress as ac
from autocompress.calls import bind
from autocompress.evaluate import Evaluator
from autocompress.export import batched, compare_latency, export_onnx, onnx_metric
from autocompress.finetune import recalibrate_batchnorm, train
from autocompress.hardware.targets import cpu_model
from autocompress.search.study import Study

sys.path.insert(0, str(Path(__file__).resolve().parent))
import user_models as um  # noqa: E402 - the same data, models, Torch-Pruning arm and cells

RESULTS = um.RESULTS / "equal_finetune"


def stored(arch: str, seed: int, target: float, folder: Path) -> tuple[Any, Any, dict]:
    """``compress``'s stored result for the cell (read back: nothing is trained), the task and the cell's figures."""
    cell_file = um.cell_path(arch, seed, target)
    if not cell_file.exists():
        raise SystemExit(f"{cell_file} is missing: run benchmarks/user_models.py for this cell first")
    splits = um.digits(seed)
    task = um.loaders(splits, seed)
    model = um.pretrained(arch, seed, task, folder, 100)
    result = ac.compress(model, task, target=f"latency_ratio<={target}", max_drop=um.MAX_DROP, budget=24,
                         storage=f"sqlite:///{folder / 'studies.db'}", study=f"{arch}-seed{seed}-t{target:g}", seed=seed,
                         fill="flops", progress=False)
    return result, splits, json.loads(cell_file.read_text())


def policies(result: Any) -> dict[str, Any]:
    """The uniform policy at the target (the learning-rate trials' policy) and the best searched finalist's."""
    trials = result.study.meta.get("lr_studies") or []
    uniform = Study.open(result.study.storage, trials[0]["study"]).completed()[0].policy
    searched = [c for c in result.finalists() if c.policy != uniform]
    out = {"compress-uniform": uniform}
    if searched:
        out["compress-search"] = max(searched, key=lambda c: (c.metric, -c.record.number)).policy
    return out


def run_cell(arch: str, seed: int, target: float, folder: Path) -> dict[str, Any]:
    path = RESULTS / f"{arch}-seed{seed}-t{target:g}-{um.machine_tag()}.json"
    if path.exists():
        return json.loads(path.read_text())
    result, splits, cell = stored(arch, seed, target, folder)
    task, model = result.task, result.model
    total, final = result.training_steps, int(result.final_settings["finetune_steps"])
    lr = result.final_settings["lr"]
    example = splits["test"][0][: um.BATCH]
    models: dict[str, torch.nn.Module] = {}
    for name, policy in policies(result).items():
        um.log(f"{arch} seed {seed}: {name} fine-tuned {total} steps at lr {lr:g}")
        evaluator = Evaluator(task, finetune_epochs=0.0, finetune_steps=total, lr=lr, seed=seed, device="auto")
        models[name] = bind(evaluator.evaluate(model, policy, space=result.space).model.eval(), None, "logits")
    um.log(f"{arch} seed {seed}: Torch-Pruning ratio {cell['arms']['tp-uniform']['ratio']} fine-tuned {final} steps")
    pruned = bind(um.tp_pruned(model, cell["arms"]["tp-uniform"]["ratio"], example[:1]), None, "logits")
    recalibrate_batchnorm(pruned, task, seed=seed)
    train(pruned, task, steps=final, lr=lr, seed=seed)
    models["tp-uniform@final"] = pruned.eval()
    with tempfile.TemporaryDirectory() as tmp:
        files = {"original": export_onnx(bind(model, None, "logits"), Path(tmp) / "original.onnx", example[:8])}
        files |= {k: export_onnx(m, Path(tmp) / f"{k}.onnx", example[:8]) for k, m in models.items()}
        metrics = {k: onnx_metric(p, task, "test") for k, p in files.items()}
        timed = compare_latency(files, batched(example, um.BATCH), repeats=30, rounds=5)
    original = metrics["original"]
    arms = {k: {"metric": metrics[k], "drop": original - metrics[k],
                "latency_ratio": timed[k].median_ms / timed["original"].median_ms,
                "steps": final if k.startswith("tp") else total} for k in models}
    quoted = {f"{k} (user_models)": {"drop": v["drop"], "latency_ratio": v["latency_ratio"], "steps": v.get("steps")}
              for k, v in cell["arms"].items() if k in ("compress", "tp-uniform")}
    quoted["compress (user_models)"]["steps"] = final  # what its delivered model was trained for
    out = {"arch": arch, "seed": seed, "target": target, "machine": cpu_model(), "lr": lr, "total_steps": total,
           "final_steps": final, "original_metric": original, "arms": arms, "quoted": quoted}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    return out


def table(cells: list[dict]) -> str:
    lines = ["| model | seed | arm | fine-tune steps | latency ratio | test drop (points) |", "|---|---:|---|---:|---:|---:|"]
    for c in cells:
        rows = {**c["quoted"], **c["arms"]}
        for name, v in rows.items():
            lines.append(f"| {c['arch']} | {c['seed']} | {name} | {v['steps']:,} | {v['latency_ratio']:.3f} | {v['drop']:+.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=["mobilenet-v2", "vit"], choices=list(um.ARCHS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--out", default=None, help="user_models.py's --out for seed 0 (seed s reads OUT-s{s} when it exists)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cells = []
    for arch in args.archs:
        for seed in args.seeds:
            base = Path(args.out or "runs/user_models")
            folder = base.with_name(f"{base.name}-s{seed}") if seed and base.with_name(f"{base.name}-s{seed}").exists() else base
            started = time.perf_counter()
            cells.append(run_cell(arch, seed, args.target, folder))
            um.log(f"{arch} seed {seed}: {time.perf_counter() - started:.0f} s")
    print(table(cells))


if __name__ == "__main__":
    sys.exit(main())
