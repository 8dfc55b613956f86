"""``compress()`` on models we did not write, against ONNX Runtime int8 and Torch-Pruning uniform pruning.

    python benchmarks/user_models.py --archs resnet mobilenet-v2 vit --targets 0.5 0.25 0.15 --seeds 0 1 2

For each architecture (``transformers`` classes built from a small config, trained here from random
weights on scikit-learn's digits upsampled to 3x32x32 RGB; 1000 train / 400 val / 397 test samples,
split by the seed) and each latency target ``t``, three arms, delivered as ONNX files and measured
side by side in one ONNX Runtime run (1 thread, batch 32; medians):

- **compress** — ``ac.compress(model, Task.from_loaders(...), target=f"latency_ratio<={t}",
  max_drop=1.0, budget=24)`` with its defaults, then ``best.export(dir)`` (``int8="auto"``); when
  nothing meets the target and the drop, the nearest finalist is exported and marked;
- **ort-int8** — the original model quantized by ONNX Runtime (static QDQ and dynamic; the faster
  one whose drop is within 1 point, else the faster one), no training;
- **tp-uniform** — Torch-Pruning's uniform magnitude pruning (``BasePruner``, L2 group magnitude,
  ``global_pruning=False``, ``round_to=8`` as ``compress`` rounds channels for ONNX Runtime) at the least pruned ratio of a grid
  (0.05 .. 0.95) whose fp32 file's measured latency meets ``t`` (no margin, unlike ``compress``), then
  fine-tuned for as many steps as ``compress`` spent in total (every candidate, the learning-rate
  trials, the final fine-tune) at ``compress``'s final fine-tune's learning rate, then int8 by the same rule as ``ort-int8``.

``--fill measured`` runs ``compress(fill="measured")`` (every allocation timed whole and filled to the
latency budget) in place of the default FLOPs fill; its cells are kept apart (``-measured``).

The test drop is against the original's metric in ONNX Runtime on the test split. Results are cached
per cell under benchmarks/results/user_models/ (committed; rerun: nothing is recomputed); the table goes to benchmarks/results/user_models.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torch_pruning as tp
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import autocompress as ac
from autocompress.calls import bind
from autocompress.export import (
    batched,
    compare_latency,
    export,
    export_int8,
    export_onnx,
    onnx_metric,
)
from autocompress.finetune import evaluate_metric, recalibrate_batchnorm, train
from autocompress.hardware.targets import cpu_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BATCH = 32
MAX_DROP = 1.0
ROUND_TO = 8  # channels kept in multiples of 8, as compress keeps them for ONNX Runtime's CPU (a fair baseline)

ARCHS: dict[str, tuple[str, str, dict[str, Any], float]] = {  # class, config, settings, pretraining lr
    "resnet": ("ResNetForImageClassification", "ResNetConfig",
               {"embedding_size": 32, "hidden_sizes": [32, 64, 128, 256], "depths": [1, 1, 1, 1], "layer_type": "basic"}, 3e-3),
    "mobilenet-v2": ("MobileNetV2ForImageClassification", "MobileNetV2Config", {"depth_multiplier": 0.5, "image_size": 32}, 3e-3),
    "vit": ("ViTForImageClassification", "ViTConfig",
            {"image_size": 32, "patch_size": 4, "hidden_size": 96, "num_hidden_layers": 4, "num_attention_heads": 4,
             "intermediate_size": 384}, 1e-3),
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def digits(seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    x = (x - 0.5) / 0.5
    y = torch.tensor(data.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x, y = x[order], y[order]
    return {"train": (x[:1000], y[:1000]), "val": (x[1000:1400], y[1000:1400]), "test": (x[1400:], y[1400:])}


def loaders(splits: dict, seed: int) -> ac.Task:
    def make(name: str) -> DataLoader:
        shuffle = name == "train"
        return DataLoader(TensorDataset(*splits[name]), batch_size=64, shuffle=shuffle,
                          generator=torch.Generator().manual_seed(seed) if shuffle else None)

    return ac.Task.from_loaders(make("train"), make("val"), make("test"))


def build(arch: str, seed: int) -> nn.Module:
    import transformers

    cls, config, settings, _ = ARCHS[arch]
    torch.manual_seed(seed)
    return getattr(transformers, cls)(getattr(transformers, config)(num_channels=3, num_labels=10, **settings))


def pretrained(arch: str, seed: int, task: ac.Task, folder: Path, epochs: int) -> nn.Module:
    model = build(arch, seed)
    path = folder / f"{arch}-seed{seed}-e{epochs}.pt"
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    log(f"{arch} seed {seed}: pretraining {epochs} epochs")
    run = bind(model, None, "logits")
    train(run, task, epochs=epochs, lr=ARCHS[arch][3], weight_decay=0.0, seed=seed, progress=False)
    torch.save(model.state_dict(), path)
    return model.eval()


# --------------------------------------------------------------------------- files and their figures
def int8_files(model: nn.Module, fp32: Path, splits: dict, folder: Path) -> dict[str, Path]:
    """Static and dynamic int8 files of ``model`` (whichever ONNX Runtime can make)."""
    out = {}
    example = splits["train"][0][:8]
    try:
        out["static"] = export_int8(bind(model, None, "logits"), folder / "s.fp32.onnx", example, splits["train"][0][:256],
                                    int8_path=folder / f"{fp32.stem}.static.onnx").int8_path
    except Exception as error:  # noqa: BLE001
        log(f"  static int8 failed: {type(error).__name__}: {str(error)[:120]}")
    try:
        out["dynamic"] = export(bind(model, None, "logits"), folder / f"{fp32.stem}-dynamic", int8="dynamic", example=example).path
    except Exception as error:  # noqa: BLE001
        log(f"  dynamic int8 failed: {type(error).__name__}: {str(error)[:120]}")
    return out


def pick(variants: dict[str, dict], reference_metric: float) -> str:
    """The fastest file within MAX_DROP of the original, else the fastest (the rule of int8="auto" in autocompress.export)."""
    within = {k: v for k, v in variants.items() if reference_metric - v["metric"] <= MAX_DROP}
    pool = within or variants
    return min(pool, key=lambda k: pool[k]["latency_ms"])


def tp_pruned(model: nn.Module, ratio: float, example: torch.Tensor) -> nn.Module:
    pruned = copy.deepcopy(model)
    run = bind(pruned, None, "logits")
    modules = dict(pruned.named_modules())
    head = modules["classifier"] if isinstance(modules.get("classifier"), nn.Linear) else modules["classifier.1"]
    extra = {}
    attention = [m for m in pruned.modules() if hasattr(m, "num_attention_heads") and _projections(m)]
    if attention:  # Torch-Pruning's default for attention: every head keeps, and loses, the same dimensions
        extra = {"num_heads": {p: m.num_attention_heads for m in attention for p in _projections(m)}, "prune_head_dims": True}
    pruner = tp.pruner.BasePruner(run, example, importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=ratio,
                                  global_pruning=False, iterative_steps=1, ignored_layers=[head], round_to=ROUND_TO, **extra)
    pruner.step()
    for m in attention:  # attention modules read their sizes from attributes
        size = _projections(m)[0].out_features // m.num_attention_heads
        for name in ("head_dim", "attention_head_size"):
            if hasattr(m, name):
                setattr(m, name, size)
        if hasattr(m, "all_head_size"):
            m.all_head_size = size * m.num_attention_heads
    return pruned


def _projections(module: nn.Module) -> list[nn.Linear]:
    """An attention module's query, key and value projections (either naming of ``transformers``), else []."""
    for names in (("query", "key", "value"), ("q_proj", "k_proj", "v_proj")):
        if all(isinstance(getattr(module, n, None), nn.Linear) for n in names):
            return [getattr(module, n) for n in names]
    return []


def latency_ratio(model: nn.Module, original_path: Path, example: torch.Tensor, folder: Path) -> float:
    path = export_onnx(bind(model, None, "logits"), folder / "probe.onnx", example[:8])
    timed = compare_latency({"o": original_path, "p": path}, batched(example, BATCH), repeats=15, rounds=3)
    return timed["p"].median_ms / timed["o"].median_ms


GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))  # Torch-Pruning ratios 0.05 .. 0.95


def scan_tp(model: nn.Module, target: float, original_path: Path, example: torch.Tensor, folder: Path,
            cache: Path) -> tuple[float, float, dict]:
    """The least pruned ratio of GRID whose fp32 file measures within ``target`` (latency is not monotone in
    the ratio, so a bisection can miss it: 0.95 measured 0.82x and 0.475 0.23x on MobileNetV2); else the fastest.
    Returns (ratio, its measured latency ratio, every point measured). The scan is kept in ``cache``
    (one per model: every target reads it)."""
    if cache.exists():
        points = {float(k): v for k, v in json.loads(cache.read_text()).items()}
    else:
        points = {ratio: latency_ratio(tp_pruned(model, ratio, example[:1]), original_path, example, folder) for ratio in GRID}
        cache.write_text(json.dumps(points))
    meeting = [r for r in GRID if points[r] <= target]
    ratio = min(meeting) if meeting else min(GRID, key=lambda r: points[r])
    return ratio, points[ratio], points


# --------------------------------------------------------------------------- one cell
def cell(arch: str, seed: int, target: float, args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(args.out)
    path = cell_path(arch, seed, target, args.fill)
    if path.exists():
        return json.loads(path.read_text())
    splits = digits(seed)
    task = loaders(splits, seed)
    model = pretrained(arch, seed, task, folder, args.pretrain_epochs)
    started = time.perf_counter()
    result = ac.compress(model, task, target=f"latency_ratio<={target}", max_drop=MAX_DROP, budget=args.budget,
                         storage=f"sqlite:///{folder / 'studies.db'}", study=f"{arch}-seed{seed}-t{target:g}" + ("-measured" if args.fill == "measured" else ""), seed=seed, fill=args.fill,
                         progress=False)
    search_seconds = time.perf_counter() - started
    best, met = result.best(), True
    if best is None:  # the nearest finalist, marked
        met = False
        pool = result.finalists() or result.front()
        best = min(pool, key=lambda c: (max(0.0, c.cost_ratio - target), c.accuracy_drop)) if pool else None
    steps = result.training_steps
    lr = result.final_settings["lr"]  # the final fine-tune's rate: the one its long fine-tune chose
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        example = splits["test"][0][:BATCH]
        files: dict[str, Path] = {"original": export_onnx(bind(model, None, "logits"), work / "original.onnx", example[:8])}
        for name, file in int8_files(model, files["original"], splits, work).items():
            files[f"ort-int8/{name}"] = file
        if best is not None:
            delivered = best.export(work / "compress")
            files["compress"] = delivered
        log(f"{arch} seed {seed} t {target}: Torch-Pruning uniform, scanning the ratio")
        ratio, measured, scanned = scan_tp(model, target, files["original"], example, work,
                                           folder / f"{arch}-seed{seed}-tp-scan.json")
        pruned = tp_pruned(model, ratio, example[:1])
        run = bind(pruned, None, "logits")
        recalibrate_batchnorm(run, task, seed=seed)
        before_ft = evaluate_metric(run, task, "val")
        train(run, task, steps=max(1, steps), lr=lr, seed=seed)
        files["tp/fp32"] = export_onnx(run, work / "tp.onnx", example[:8])
        for name, file in int8_files(pruned, files["tp/fp32"], splits, work).items():
            files[f"tp/{name}"] = file
        test_task = task
        metrics = {k: onnx_metric(p, test_task, "test") for k, p in files.items()}
        timed = compare_latency(files, batched(example, BATCH), repeats=30, rounds=5)
    original = metrics["original"]
    variants = {k: {"metric": metrics[k], "latency_ms": timed[k].median_ms} for k in files}
    arms = {}
    ort = {k.split("/")[1]: v for k, v in variants.items() if k.startswith("ort-int8/")}
    if ort:
        chosen = pick(ort, original)
        arms["ort-int8"] = {**ort[chosen], "file": chosen}
    tp_files = {k.split("/")[1]: v for k, v in variants.items() if k.startswith("tp/")}
    chosen = pick(tp_files, original)
    arms["tp-uniform"] = {**tp_files[chosen], "file": chosen, "ratio": ratio, "fp32_latency_ratio": measured, "scan": scanned,
                          "val_before_finetune": before_ft, "steps": steps}
    if "compress" in variants:
        arms["compress"] = {**variants["compress"], "met": met, "candidate": best.record.number, "steps": steps, "lr": lr,
                            "search_seconds": search_seconds, "policy_latency_ratio": best.cost_ratio}
    for arm in arms.values():
        arm["latency_ratio"] = arm["latency_ms"] / variants["original"]["latency_ms"]
        arm["drop"] = original - arm["metric"]
    out = {"arch": arch, "seed": seed, "target": target, "machine": cpu_model(), "fill": args.fill, "original_metric": original,
           "original_ms": variants["original"]["latency_ms"], "arms": arms, "variants": variants}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    return out


def machine_tag(name: str | None = None) -> str:
    """A short name for the CPU (``intel-xeon``, ``amd-epyc``): latency ratios and int8 gains differ between
    CPUs (this project's machines have been both), so each cell is kept per CPU and tabulated per CPU."""
    words = re.sub(r"\(r\)|\(tm\)|[^a-z0-9 ]", " ", (name or cpu_model()).lower()).split()
    return "-".join(words[:2]) or "unknown"


def cell_path(arch: str, seed: int, target: float, fill: str = "flops") -> Path:
    """A cell's figures are kept (committed) under benchmarks/results/user_models/, per CPU and ``compress``'s
    ``fill``: a rerun recomputes nothing."""
    suffix = "" if fill == "flops" else f"-{fill}"
    return RESULTS / "user_models" / f"{arch}-seed{seed}-t{target:g}-{machine_tag()}{suffix}.json"


def table(cells: list[dict], args: argparse.Namespace) -> str:
    lines = [f"Command: `python benchmarks/user_models.py --archs {' '.join(args.archs)} --targets {' '.join(map(str, args.targets))} "
             f"--seeds {' '.join(map(str, args.seeds))} --budget {args.budget}`",
             f"ONNX Runtime, 1 thread, batch {BATCH}; {os.cpu_count()} cores; tabulated {time.strftime('%Y-%m-%d')} at git {git()}. "
             "Medians over seeds; latency is the delivered file's, as a ratio of the original's fp32 file measured side by "
             f"side; drop = original test accuracy (ONNX Runtime) - the file's; met: latency within the target (+5 %) and drop <= {MAX_DROP:g}."]
    for machine, fill in sorted({(c["machine"], c.get("fill", "flops")) for c in cells}):
        lines += ["", f"Machine: {platform.machine()}, {machine}; compress(fill={fill!r})", "",
                  "| model | target | arm | latency ratio | test drop (points) | met (seeds) | training steps |",
                  "|---|---:|---|---:|---:|---:|---:|"]
        for arch in args.archs:
            for target in args.targets:
                group = [c for c in cells if c["arch"] == arch and c["target"] == target and c["machine"] == machine
                         and c.get("fill", "flops") == fill]
                for arm in ("compress", "tp-uniform", "ort-int8"):
                    rows = [c["arms"][arm] for c in group if arm in c["arms"]]
                    if not rows:
                        continue
                    ratio = statistics.median(r["latency_ratio"] for r in rows)
                    drop = statistics.median(r["drop"] for r in rows)
                    met = sum(1 for r in rows if r["latency_ratio"] <= target * 1.05 and r["drop"] <= MAX_DROP)
                    steps = statistics.median(r.get("steps", 0) for r in rows)
                    lines.append(f"| {arch} | {target:g} | {arm} | {ratio:.3f} | {drop:+.2f} | {met}/{len(rows)} | {steps:,.0f} |")
    return "\n".join(lines) + "\n"


def git() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    parser.add_argument("--targets", nargs="+", type=float, default=[0.5, 0.25, 0.15])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--budget", type=int, default=24)
    # trained to convergence: an undertrained original gains from any fine-tune (MobileNetV2 after 30
    # epochs: 96.5 % test, and 98.2 % after Torch-Pruning's 3,800 fine-tune steps at half its latency)
    parser.add_argument("--pretrain-epochs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/user_models", help="pretrained weights and the studies (not committed)")
    parser.add_argument("--fill", default="flops", choices=["flops", "measured"],
                        help="compress's fill: allocations on the uniform policy's FLOPs budget, or timed whole")
    parser.add_argument("--report", action="store_true", help="only tabulate the cells already computed")
    parser.add_argument("--pretrain-only", action="store_true", help="only pretrain (and cache) the models")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    cells = []
    for arch in args.archs:
        for seed in args.seeds:
            if args.pretrain_only:
                splits = digits(seed)
                pretrained(arch, seed, loaders(splits, seed), Path(args.out), args.pretrain_epochs)
                continue
            for target in args.targets:
                if args.report:  # every CPU's cells
                    for path in sorted(cell_path(arch, seed, target).parent.glob(f"{arch}-seed{seed}-t{target:g}-*.json")):
                        cells.append(json.loads(path.read_text()))
                    continue
                cells.append(cell(arch, seed, target, args))
                log(json.dumps({k: {a: round(v["latency_ratio"], 3) for a, v in cells[-1]["arms"].items()} for k in ["ratio"]}))
                log(json.dumps({k: {a: round(v["drop"], 2) for a, v in cells[-1]["arms"].items()} for k in ["drop"]}))
    if args.pretrain_only:
        return
    text = table(cells, args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "user_models.md").write_text(text)
    (RESULTS / "user_models.json").write_text(json.dumps(cells, indent=2))
    print(text)


if __name__ == "__main__":
    sys.exit(main())
