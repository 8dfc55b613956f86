"""The file to deploy: a compressed model written as ONNX, int8 where that is measured to pay.

:func:`deliver` writes, into one folder:

- ``policy.json``, ``state_dict.pt``, ``meta.json`` (:func:`autocompress.saving.save`: the model
  rebuilds from the original + policy, no pickled modules);
- ``model.onnx``: the variant chosen among fp32 (checked against PyTorch), static int8 (ONNX
  Runtime QDQ, calibrated on training inputs) and dynamic int8 (ONNX Runtime's
  ``quantize_dynamic``, for MatMul-heavy models such as transformers);
- ``meta.json["deploy"]``: every variant's metric (ONNX Runtime, on the test split, else val) and
  latency (median, timed side by side with the original's fp32 file in one run), and why the
  chosen one won.

``int8="auto"`` takes the fastest variant whose metric is within ``max_drop`` of the original's
(the original run in ONNX Runtime on the same split); ``True`` the fastest int8 variant that could
be made; ``False`` the fp32 file. A variant that cannot be made (an operator ONNX Runtime cannot
quantize, outputs too far from fp32) is listed with its reason, never a crash.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from autocompress.calls import OutputSelector, fit_inputs, split_example
from autocompress.export import export_onnx
from autocompress.files import atomic_write
from autocompress.hardware.targets import batched
from autocompress.saving import save
from autocompress.task import Task

__all__ = ["INT8_CHOICES", "deliver"]

INT8_CHOICES = ("auto", True, False)
CALIBRATION_SAMPLES = 256


def _dynamic_int8(fp32: Path, out: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from autocompress.export import prepare_for_quantization

    root = logging.getLogger()
    level = root.level
    with tempfile.TemporaryDirectory(prefix="autocompress-dyn-") as tmp:
        prepared = prepare_for_quantization(fp32, Path(tmp) / "prepared.onnx")
        root.setLevel(logging.ERROR)  # ONNX Runtime logs a warning per 1-D weight it leaves alone (LayerNorm)
        try:
            quantize_dynamic(str(prepared), str(out), per_channel=True, weight_type=QuantType.QInt8)
        finally:
            root.setLevel(level)
    return out


def _calibration(task: Task, model: nn.Module) -> Any:
    try:
        return fit_inputs(model, task.sample_inputs("train", CALIBRATION_SAMPLES))
    except RuntimeError:  # batches of different sequence lengths do not join: one batch then
        return fit_inputs(model, task.example_input(task.batch_size))


def deliver(
    small: nn.Module,
    original: nn.Module,
    task: Task,
    directory: str | Path,
    *,
    output: OutputSelector = None,
    int8: bool | str = "auto",
    max_drop: float = 1.0,
    threads: int = 1,
    batch: int = 32,
    repeats: int = 30,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``small`` (made by ``apply_policy`` from ``original``) to ``directory``; returns ``model.onnx``'s path."""
    from autocompress.export import export_int8, onnx_metric
    from autocompress.hardware.latency import compare_latency

    if int8 not in INT8_CHOICES:
        raise ValueError(f"int8 must be one of {INT8_CHOICES}, got {int8!r}")
    directory = Path(directory)
    save(small, directory)
    example = fit_inputs(original, task.example_input(8))
    tensors, _ = split_example(example)
    split = "test" if task.has_split("test") else "val"
    variants: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="autocompress-deliver-") as tmp:
        work = Path(tmp)
        paths = {"original": export_onnx(original, work / "original.onnx", example, output=output),
                 "fp32": export_onnx(small, work / "fp32.onnx", example, output=output)}
        if int8 is not False:
            try:
                made = export_int8(small, work / "static.fp32.onnx", example, _calibration(task, original),
                                   output=output, int8_path=work / "int8-static.onnx")
                paths["int8-static"] = made.int8_path
            except Exception as error:  # noqa: BLE001 - a variant that cannot be made is listed, not fatal
                variants["int8-static"] = {"made": False, "reason": f"{type(error).__name__}: {error}"[:500]}
            try:
                paths["int8-dynamic"] = _dynamic_int8(paths["fp32"], work / "int8-dynamic.onnx")
            except Exception as error:  # noqa: BLE001
                variants["int8-dynamic"] = {"made": False, "reason": f"{type(error).__name__}: {error}"[:500]}
        timed = compare_latency(paths, batched(tuple(t.detach().cpu() for t in tensors), batch), threads=threads,
                                repeats=repeats, rounds=5)
        for name, path in paths.items():
            try:
                metric = onnx_metric(path, task, split)
            except Exception as error:  # noqa: BLE001 - a file ONNX Runtime cannot run on the data
                variants[name] = {"made": False, "reason": f"{type(error).__name__}: {error}"[:500]}
                continue
            variants[name] = {"made": True, "metric": metric, "latency_ms": timed[name].median_ms,
                              "bytes": Path(path).stat().st_size}
        reference = variants["original"]
        for values in variants.values():
            if values.get("made"):
                values["latency_ratio"] = values["latency_ms"] / reference["latency_ms"]
                values["drop"] = reference["metric"] - values["metric"]
        chosen, why = _choose(variants, int8, max_drop)
        shutil.copyfile(paths[chosen], directory / "model.onnx")
    meta_path = directory / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["deploy"] = {"file": "model.onnx", "chosen": chosen, "why": why, "int8": int8, "max_drop": max_drop,
                      "split": split, "threads": threads, "batch": batch, "variants": variants, **(extra or {})}
    atomic_write(meta_path, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2, default=str)))
    return directory / "model.onnx"


def _choose(variants: dict[str, dict[str, Any]], int8: bool | str, max_drop: float) -> tuple[str, str]:
    made = {k: v for k, v in variants.items() if v.get("made") and k != "original"}
    if "fp32" not in made:
        raise RuntimeError(f"the fp32 ONNX file could not be measured: {variants.get('fp32')}")
    if int8 is False:
        return "fp32", "int8=False"
    quantized = {k: v for k, v in made.items() if k.startswith("int8")}
    if int8 is True:
        if not quantized:
            reasons = "; ".join(f"{k}: {v.get('reason')}" for k, v in variants.items() if k.startswith("int8"))
            raise RuntimeError(f"int8=True but no int8 file could be made ({reasons})")
        name = min(quantized, key=lambda k: quantized[k]["latency_ms"])
        return name, "int8=True: the fastest int8 file"
    within = {k: v for k, v in made.items() if v["drop"] <= max_drop or k == "fp32"}
    name = min(within, key=lambda k: within[k]["latency_ms"])
    if name == "fp32":
        slower = [k for k in quantized if quantized[k]["latency_ms"] >= made["fp32"]["latency_ms"]]
        lossy = [k for k in quantized if k not in slower]
        return "fp32", (f"int8 files measured no faster ({', '.join(slower) or 'none'}) or beyond the drop "
                        f"({', '.join(lossy) or 'none'})" if quantized else "no int8 file could be made")
    return name, f"fastest file within the drop of {max_drop:g} (measured {made[name]['latency_ms']:.3g} ms, fp32 {made['fp32']['latency_ms']:.3g} ms)"

