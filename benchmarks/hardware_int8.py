"""Int8 deployment on the CPU: static QDQ int8 ONNX against fp32 ONNX, for the zoo models.

    python benchmarks/hardware_int8.py                       # writes benchmarks/results/hardware_int8.{json,md}
    python benchmarks/hardware_int8.py --models wine-mlp --no-ablation --repeats 20   # quick

Per zoo model (pretrained, ``--seed``): the fp32 ONNX file of
:func:`autocompress.export.export_onnx` and the int8 file of
:func:`autocompress.export.export_int8` (default settings: uint8 activations, per-channel 7-bit
int8 weights, min/max calibration on the first ``--calibration-samples`` training inputs).
For each file: the test metric in ONNX Runtime, the file size, the argmax agreement with
fp32 and the largest output difference (relative to the fp32 outputs' largest magnitude)
on the val split, and the latency in ONNX Runtime on the CPU (``--threads`` intra-op
threads), all files of a model side by side, round-robin
(:func:`autocompress.export.compare_latency`: ``--rounds`` rounds of
``--repeats`` calls each, 20 warm-up calls), at batch 1 and batch 32: median and
10th/90th percentiles in milliseconds per batch.

Ablation (``--ablation``, default on): the same model quantized with one setting changed
(per-tensor weights; int8 activations; 8-bit weights, i.e. no ``reduce_range``; int8
outputs; no pre-processing), and the pre-processed fp32 file (``quant_pre_process`` and
Gemm+BatchNorm folding, still fp32), so that the int8 gain is not confused with the
graph fusions.

:func:`int8_section` is importable (``benchmarks/hardware.py`` uses it) and returns the
results with a ``markdown`` rendering.
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

import onnx
import onnxruntime
import torch

from autocompress.export import (
    compare_latency,
    compare_onnx_outputs,
    export_int8,
    onnx_metric,
    prepare_for_quantization,
    quantize_onnx_int8,
)
from autocompress.finetune import evaluate_metric
from autocompress.hardware.targets import cpu_model
from autocompress.zoo import load_zoo

RESULTS = Path(__file__).parent / "results"
MODELS = ("mnist1d-cnn", "mnist1d-resnet", "digits-cnn", "wine-mlp")
BATCHES = (1, 32)
WARMUP = 20
VARIANTS: dict[str, dict[str, Any]] = {  # one quantize_onnx_int8 setting changed from the default
    "int8 per-tensor": {"per_channel": False},
    "int8 int8-act": {"activation_type": "int8"},
    "int8 8-bit weights": {"reduce_range": False},
    "int8 int8-outputs": {"float_outputs": False},
    "int8 no pre-process": {"preprocess": False},
}


def log(message: str) -> None:
    print(message, flush=True)


# ------------------------------------------------------------------ machine
def _cpu_flags() -> list[str]:
    """The SIMD flags that decide ONNX Runtime's int8 kernels (AVX2, AVX-512, VNNI, AMX)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
    return [flag for flag in wanted if flag in flags]


def machine(threads: int) -> dict[str, Any]:
    """Platform, CPU, cores, library versions, threads, load average (1/5/15 min) now."""
    return {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_flags": _cpu_flags(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "ort_threads": threads,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


# ------------------------------------------------------------------ one model
def _latency_row(result) -> dict[str, float]:
    return {"median_ms": result.median_ms, "p10_ms": result.p10_ms, "p90_ms": result.p90_ms, "samples": result.repeats}


def model_section(
    name: str,
    seed: int,
    threads: int,
    repeats: int,
    rounds: int,
    *,
    ablation: bool = True,
    calibration_samples: int = 512,
    batches: tuple[int, ...] = BATCHES,
    workdir: Path,
) -> dict[str, Any]:
    """fp32 vs int8 (and the ablation variants) of one zoo model: metric, size, agreement, latency."""
    entry = load_zoo(name, pretrained=True, seed=seed)
    task = entry.task
    calibration = task.split("train")[0][:calibration_samples]
    val_inputs = task.split("val")[0]
    made = export_int8(entry.model, workdir / f"{name}.onnx", entry.example_input, calibration)
    files: dict[str, Path] = {"fp32": made.fp32_path, "int8": made.int8_path}
    if ablation:
        files["fp32 pre-processed"] = prepare_for_quantization(made.fp32_path, workdir / f"{name}.prepared.onnx")
        for variant, options in VARIANTS.items():
            slug = variant.replace(" ", "_")
            files[variant] = quantize_onnx_int8(made.fp32_path, workdir / f"{name}.{slug}.onnx", calibration, **options)
    rows: dict[str, dict[str, Any]] = {}
    for label, path in files.items():
        agreement = compare_onnx_outputs(made.fp32_path, path, val_inputs, threads=threads)
        rows[label] = {
            "bytes": path.stat().st_size,
            "metric": onnx_metric(path, task, "test", threads=threads),
            "val_argmax_agreement": agreement.argmax_agreement,
            "val_relative_diff": agreement.relative_diff,
            "val_max_abs_diff": agreement.max_abs_diff,
            "latency": {},
        }
    for batch in batches:
        measured = compare_latency(
            files, task.example_input(batch), threads=threads, warmup=WARMUP, repeats=repeats, rounds=rounds
        )
        for label, result in measured.items():
            rows[label]["latency"][str(batch)] = _latency_row(result)
    for row in rows.values():
        row["speedup"] = {
            b: rows["fp32"]["latency"][b]["median_ms"] / row["latency"][b]["median_ms"] for b in row["latency"]
        }
    section = {
        "model": name,
        "params": sum(p.numel() for p in entry.model.parameters()),
        "metric_name": task.metric_name,
        "torch_metric": evaluate_metric(entry.model, task, "test"),
        "calibration_samples": len(calibration),
        "val_samples": len(val_inputs),
        "test_samples": task.num_samples["test"],
        "size_ratio": made.size_ratio,
        "rows": rows,
    }
    fp32, int8 = rows["fp32"], rows["int8"]
    log(
        f"{name}: {task.metric_name} fp32 {fp32['metric']:.2f} int8 {int8['metric']:.2f}; size {made.size_ratio:.2f}x; "
        + "; ".join(
            f"batch {b}: {fp32['latency'][b]['median_ms']:.3f} -> {int8['latency'][b]['median_ms']:.3f} ms "
            f"({int8['speedup'][b]:.2f}x)"
            for b in fp32["latency"]
        )
    )
    return section


# ------------------------------------------------------------------ section
def int8_section(
    zoo_names: list[str] | tuple[str, ...] = MODELS,
    seed: int = 0,
    threads: int = 1,
    repeats: int = 100,
    rounds: int = 5,
    *,
    ablation: bool = True,
    calibration_samples: int = 512,
    batches: tuple[int, ...] = BATCHES,
) -> dict[str, Any]:
    """fp32 vs int8 ONNX for each of ``zoo_names``; the results and their ``markdown``.

    Latency at each of ``batches`` (samples per call), ``rounds`` x ``repeats`` timed calls
    per file, ``threads`` ONNX Runtime intra-op threads (and torch threads meanwhile).
    """
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    started = time.perf_counter()
    load_start = machine(threads)["load_average"]
    try:
        with tempfile.TemporaryDirectory(prefix="hardware-int8-") as folder:
            models = [
                model_section(
                    name,
                    seed,
                    threads,
                    repeats,
                    rounds,
                    ablation=ablation,
                    calibration_samples=calibration_samples,
                    batches=tuple(batches),
                    workdir=Path(folder),
                )
                for name in zoo_names
            ]
    finally:
        torch.set_num_threads(old_threads)
    result: dict[str, Any] = {
        "machine": machine(threads),
        "load_average_start": load_start,
        "seed": seed,
        "settings": {
            "threads": threads,
            "repeats": repeats,
            "rounds": rounds,
            "warmup": WARMUP,
            "batches": list(batches),
            "calibration_samples": calibration_samples,
            "ablation": ablation,
            "default": "uint8 activations, per-channel 7-bit (reduce_range) int8 weights, minmax, float outputs",
        },
        "models": models,
        "seconds": time.perf_counter() - started,
    }
    result["markdown"] = markdown_body(result)
    return result


# ------------------------------------------------------------------ report
def _ms(latency: dict[str, float]) -> str:
    return f"{latency['median_ms']:.3f} ({latency['p10_ms']:.3f}–{latency['p90_ms']:.3f})"


def _main_table(models: list[dict[str, Any]]) -> list[str]:
    batches = list(models[0]["rows"]["fp32"]["latency"])
    header = "| model | params | fp32 / int8 file | size ratio | test metric fp32 → int8 (Δ) | val argmax agreement | val max Δ / max |fp32| |"
    align = "|---|---:|---:|---:|---:|---:|---:|"
    for b in batches:
        header += f" batch {b}: fp32 ms | int8 ms | speed-up |"
        align += "---:|---:|---:|"
    lines = [header, align]
    for m in models:
        fp32, int8 = m["rows"]["fp32"], m["rows"]["int8"]
        cells = [
            m["model"],
            f"{m['params']:,}",
            f"{fp32['bytes'] / 1e3:.1f} kB / {int8['bytes'] / 1e3:.1f} kB",
            f"{m['size_ratio']:.2f}×",
            f"{fp32['metric']:.2f} → {int8['metric']:.2f} ({int8['metric'] - fp32['metric']:+.2f})",
            f"{int8['val_argmax_agreement']:.2f} %",
            f"{100 * int8['val_relative_diff']:.1f} %",
        ]
        for b in batches:
            cells += [_ms(fp32["latency"][b]), _ms(int8["latency"][b]), f"**{int8['speedup'][b]:.2f}×**"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _ablation_table(models: list[dict[str, Any]]) -> list[str]:
    batches = list(models[0]["rows"]["fp32"]["latency"])
    lines = [
        "| model | file | size kB | test metric (Δ vs fp32) | val argmax agreement | val max Δ / max |fp32| | "
        + " | ".join(f"batch {b} ms (speed-up)" for b in batches)
        + " |",
        "|---|---|---:|---:|---:|---:|" + "---:|" * len(batches),
    ]
    for m in models:
        fp32_metric = m["rows"]["fp32"]["metric"]
        for label, row in m["rows"].items():
            cells = [
                m["model"],
                label,
                f"{row['bytes'] / 1e3:.1f}",
                f"{row['metric']:.2f} ({row['metric'] - fp32_metric:+.2f})",
                f"{row['val_argmax_agreement']:.2f} %",
                f"{100 * row['val_relative_diff']:.1f} %",
            ]
            cells += [f"{row['latency'][b]['median_ms']:.3f} ({row['speedup'][b]:.2f}×)" for b in batches]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _verdict(models: list[dict[str, Any]]) -> list[str]:
    """The issue's goals, checked on the measured numbers."""
    lines = []
    for m in models:
        fp32, int8 = m["rows"]["fp32"], m["rows"]["int8"]
        drop = fp32["metric"] - int8["metric"]
        speed = ", ".join(
            f"{'faster' if s > 1.03 else 'slower' if s < 0.97 else 'no faster'} at batch {b} ({s:.2f}×)"
            for b, s in int8["speedup"].items()
        )
        accuracy = "within" if drop <= 0.5 else "**more than**"
        lines.append(
            f"- {m['model']}: int8 {accuracy} 0.5 points of fp32 ({-drop:+.2f}); {speed}; "
            f"file {m['size_ratio']:.2f}× smaller."
        )
    return lines


NOTES = """\
How to read it, and what was tried. The tables above are this run's numbers; the profiler
figures and spot checks below were taken when this benchmark was written (2026-11-22, the
same 2-core AVX2 machine, ONNX Runtime 1.31.1, 1 thread).

- The int8 file is QDQ ONNX; ONNX Runtime's CPU provider fuses it into int8 kernels
  (QLinearConv, QGemm, QLinearAdd, QLinearGlobalAveragePool). Its size: int8 weights plus
  per-channel float scales, int32 biases with their scales, and the Quantize/Dequantize
  nodes with their names. Where the weights dominate the file shrinks close to 4×
  (mnist1d-cnn); models of many small layers keep more overhead (mnist1d-resnet, 48k
  weights in 16 layers: 2×; digits-cnn, 26k weights: 2.9×).
- "int8 int8-act" (int8 activations instead of uint8): ONNX Runtime has uint8 kernels for
  depthwise convs, Add and global average pooling but not int8 ones, so mnist1d-resnet's
  depthwise convs and residual adds ran in fp32 between Quantize/DequantizeLinear pairs
  (profiled at batch 32: depthwise convs 200–800 µs each in both fp32 and int8-act, 27–51 µs
  with uint8). Elsewhere int8 and uint8 activations gave the same speed and outputs. Hence
  uint8 is the default.
- "int8 8-bit weights" (no `reduce_range`): on a CPU without VNNI (see the CPU flags
  above) ONNX Runtime's u8×s8 kernels add pairs of products in 16 bits, which overflow
  with full-range 8-bit weights: the outputs stray much further from fp32 than the same QDQ
  graph run unfused (digits-cnn: 16 % of the logit range fused, 0.8 % unfused). 7-bit
  weights avoid it at the same speed.
- "int8 int8-outputs" rounds the logits to 8 bits on the calibrated range (clipping larger
  ones); the default leaves the model's outputs in float, at the same speed.
- "int8 per-tensor": as fast as per-channel on the convs, a little less close to fp32.
- "fp32 pre-processed" is the fp32 graph after `quant_pre_process` and Gemm+BatchNorm
  folding. For the CNNs the exporter already folded Conv+BatchNorm, so it gains nothing;
  for wine-mlp the folding alone makes fp32 as fast as (or faster than) int8: on a
  13-256-256-3 MLP the call overhead dominates and int8 arithmetic does not pay.
  "int8 no pre-process" leaves that BatchNorm unfolded (and quantizes it): slower.
- digits-cnn is slower in int8 with every setting tried and at every batch size tried
  (spot checks at batch 8 and 256: 0.67× and 0.77×). ONNX Runtime's profiler at batch 32:
  every int8 3×3 conv on the 8×8 images is slower than the fp32 NCHWc conv (16→32 channels
  583 µs vs 462 µs; the first conv, one input channel, 139 µs vs 43 µs), so keeping some
  layers in fp32 (`exclude`) cannot make it faster either: on this CPU keep it in fp32.
- Larger batches do not change the ratios much (the cost is per sample): mnist1d-cnn
  1.36× at batch 8 and at batch 256, wine-mlp 1.0× and 1.1×.
"""


def markdown_body(result: dict[str, Any]) -> str:
    """The section's markdown, without a title (``benchmarks/hardware.py`` embeds it)."""
    s = result["settings"]
    lines = [
        f"ONNX Runtime {result['machine']['onnxruntime']} on the CPU, {s['threads']} intra-op thread(s); latency "
        f"per batch in ms, median (p10–p90) over {s['rounds']} round-robin rounds × {s['repeats']} calls after "
        f"{s['warmup']} warm-up calls; default int8: {s['default']}, calibrated on the first "
        f"{s['calibration_samples']} training inputs (all of them when fewer); metric on the test split, "
        "agreement on the val split, both in ONNX Runtime.",
        "",
        *_main_table(result["models"]),
        "",
        "Goals (int8 at most 0.5 points below fp32, faster on the CPU, about 4× smaller):",
        "",
        *_verdict(result["models"]),
        "",
    ]
    if s["ablation"]:
        lines += ["Ablation (one setting changed from the default int8; speed-up vs fp32):", "", *_ablation_table(result["models"]), ""]
    lines += [NOTES]
    return "\n".join(lines)


def markdown(result: dict[str, Any], command: str) -> str:
    m = result["machine"]
    load_start, load_end = result["load_average_start"], m["load_average"]
    busy = ""
    if load_start and m["cores"] and max(load_start[0], load_end[0]) > 0.5 * m["cores"]:
        busy = (
            f" **The machine was shared and busy** (load average {load_start[0]:.2f} at start, {load_end[0]:.2f} "
            f"at the end, on {m['cores']} cores): absolute latencies are noisier than on an idle machine; the "
            "side-by-side round-robin keeps the fp32 / int8 ratios comparable."
        )
    loads = "/".join(f"{x:.2f}" for x in load_start) if load_start else "-"
    return "\n".join(
        [
            "# Int8 deployment: static QDQ int8 ONNX vs fp32 ONNX (ONNX Runtime, CPU)",
            "",
            f"`{command}`; {m['date']}; seed {result['seed']}; {m['cpu']} ({', '.join(m['cpu_flags']) or 'no AVX2'}), "
            f"{m['cores']} cores, {m['platform']}; Python {m['python']}, torch {m['torch']}, onnx {m['onnx']}, "
            f"onnxruntime {m['onnxruntime']}, {m['ort_threads']} ORT thread(s); load average (1/5/15 min) {loads} "
            f"at start; {result['seconds']:.0f} s.{busy}",
            "",
            result["markdown"],
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=100, help="timed calls per model per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=list(BATCHES), help="samples per call")
    parser.add_argument("--calibration-samples", type=int, default=512)
    parser.add_argument("--ablation", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--out", type=Path, default=RESULTS / "hardware_int8")
    args = parser.parse_args(argv)
    command = "python benchmarks/hardware_int8.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    result = int8_section(
        args.models,
        args.seed,
        args.threads,
        args.repeats,
        args.rounds,
        ablation=args.ablation,
        calibration_samples=args.calibration_samples,
        batches=tuple(args.batches),
    )
    result["command"] = command.strip()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str))
    args.out.with_suffix(".md").write_text(markdown(result, result["command"]) + "\n")
    log(f"wrote {args.out}.json/.md in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
