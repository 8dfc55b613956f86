"""The one entry point: :func:`export` writes a model's (or a ``compress()`` candidate's) ONNX file(s),
fp32 or int8 from one plan of which layers run in int8 (:mod:`~autocompress.export.plan`), each
checked, measured when asked, and returns one :class:`~autocompress.export.report.ExportReport`.

The files, in ``directory`` (``report.path`` is the one to deploy):

- ``int8=False``: ``model.onnx``, fp32, checked against PyTorch;
- ``int8="static"``: ``model.onnx`` (fp32) and ``model.int8.onnx``, static int8 calibrated on
  ``calibration`` and checked against ``model.onnx`` (:mod:`~autocompress.export.static`);
- ``int8="dynamic"``: ``model.onnx``, dynamic int8, checked against PyTorch
  (:mod:`~autocompress.export.dynamic`);
- ``int8="auto"``: ``model.onnx``, the fastest of fp32, static and dynamic int8 whose metric is within
  ``max_drop`` of the reference model's, all made and measured side by side in a scratch folder
  (fp32 without a task to measure the drop on); ``int8=True``: the faster int8 file.

An int8 file that cannot be made or fails its check raises for ``"static"`` / ``"dynamic"`` and is
listed with its reason for ``"auto"`` / ``True``. Every failure is an
:class:`~autocompress.export.errors.ExportError`.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from autocompress.calls import Example, OutputSelector, fit_inputs, split_example
from autocompress.export.agreement import OutputAgreement, model_agreement, onnx_metric
from autocompress.export.dynamic import dynamic_variant
from autocompress.export.errors import ExportError
from autocompress.export.fp32 import export_onnx
from autocompress.export.plan import MODES, Int8Plan
from autocompress.export.report import VARIANTS, ExportReport, Variant
from autocompress.export.static import static_samples, static_variant
from autocompress.export.timing import batched, compare_latency
from autocompress.files import atomic_write
from autocompress.task import Task

if TYPE_CHECKING:
    from autocompress.result import Candidate

__all__ = ["INT8_CHOICES", "choose", "export"]

INT8_CHOICES = ("auto", "static", "dynamic", True, False)
#: the files of an export that keeps every variant it makes (not "auto" / True)
FILES = {"fp32": "model.onnx", "int8-static": "model.int8.onnx", "int8-dynamic": "model.onnx"}
CALIBRATION_SAMPLES = 256
EXAMPLE_BATCH = 8


def _valid(int8: object) -> bool:
    return isinstance(int8, bool) or (isinstance(int8, str) and int8 in INT8_CHOICES)


def export(
    model_or_candidate: nn.Module | Candidate,
    directory: str | Path,
    *,
    int8: str | bool = "auto",
    example: Example | None = None,
    task: Task | None = None,
    calibration: Example | None = None,
    check_inputs: Example | None = None,
    output: OutputSelector = None,
    exclude: Iterable[str] = (),
    original: nn.Module | None = None,
    max_drop: float | None = None,
    latency: bool = False,
    threads: int = 1,
    batch: int | None = None,
    repeats: int = 30,
) -> ExportReport:
    """Write ``model_or_candidate``'s ONNX file(s) into ``directory`` as ``int8`` says (module docstring).

    ``example``: an input batch (a tensor, positional tensors or a dict of keyword tensors; default:
    ``task``'s example input); ``calibration``: static int8's calibration inputs (default: 256 of
    ``task``'s training inputs); ``check_inputs``: what the files are checked on (default: the example;
    for static int8 the first 256 calibration samples); ``output`` selects the model's output as in
    :func:`~autocompress.export.fp32.export_onnx`; ``exclude``: layers (module names) kept in fp32.
    ``original``: the model the metric drop and latency ratio are measured against (default: the
    model's own fp32 file). ``latency``: time every file (side by side, ``threads`` ONNX Runtime
    threads, ``batch`` samples, ``repeats`` x 5 rounds) and, given a task, take its metric on the test
    split (else val); "auto" and True always do. A ``compress()`` :class:`~autocompress.result.Candidate`
    brings its model, original, task, output selector, ``max_drop`` and latency batch (arguments given
    here win). The model is never modified.
    """
    if not _valid(int8):
        raise ExportError(f"int8 must be one of {', '.join(map(repr, INT8_CHOICES))}; got {int8!r}")
    if isinstance(model_or_candidate, nn.Module):
        model, given = model_or_candidate, {}
    else:  # a compress() candidate (the api layer above brings its own settings)
        given = model_or_candidate.export_settings()
        model = given["model"]
    original = original if original is not None else given.get("original")
    task = task if task is not None else given.get("task")
    output = output if output is not None else given.get("output")
    max_drop = max_drop if max_drop is not None else given.get("max_drop", 1.0)
    batch = batch if batch is not None else given.get("batch", 32)
    try:
        return _export(model, Path(directory), int8, example, task, calibration, check_inputs, output, exclude,
                       original, max_drop, latency, threads, batch, repeats)
    except ExportError:
        raise
    except ValueError as error:  # a setting, or a layer no backend runs at the model's precision
        raise ExportError(str(error)) from error
    except Exception as error:  # one error type: the ONNX exporter, ONNX Runtime
        raise ExportError(f"{type(error).__name__}: {error}") from error


def _export(model: nn.Module, directory: Path, int8: str | bool, example: Example | None, task: Task | None,
            calibration: Example | None, check_inputs: Example | None, output: OutputSelector, exclude: Iterable[str],
            original: nn.Module | None, max_drop: float, latency: bool, threads: int, batch: int,
            repeats: int) -> ExportReport:
    reference = model if original is None else original
    if example is None:
        if task is None:
            raise ExportError("give example= (an input batch of the model) or task= (whose example input is used)")
        example = fit_inputs(reference, task.example_input(EXAMPLE_BATCH))
    chooses = int8 is True or int8 == "auto"
    if chooses:
        modes = MODES if task is not None or int8 is True else ()
    else:
        modes = (int8,) if isinstance(int8, str) else ()
    measure = latency or chooses
    split = None if not measure or task is None else ("test" if task.has_split("test") else "val")
    directory.mkdir(parents=True, exist_ok=True)
    variants: dict[str, Variant] = {}
    files: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="autocompress-export-") as tmp:
        scratch = Path(tmp)

        def where(name: str) -> Path:
            return scratch / f"{name}.onnx" if chooses else directory / FILES[name]

        if measure and original is not None:
            files["original"] = export_onnx(original, scratch / "original.onnx", example, output=output)
            variants["original"] = Variant("original", bytes=files["original"].stat().st_size)
        if int8 != "dynamic":
            files["fp32"] = export_onnx(model, where("fp32"), example, output=output)
            check = model_agreement(model, files["fp32"], example if check_inputs is None else check_inputs, output)
            variants["fp32"] = Variant("fp32", check=check, bytes=files["fp32"].stat().st_size)
        for mode in modes:
            name = f"int8-{mode}"
            try:
                plan, check = _int8_variant(mode, model, files.get("fp32"), where(name), example, task, reference,
                                            calibration, check_inputs, output, exclude)
            except Exception as error:  # noqa: BLE001 - with a choice, a variant that cannot be made is listed
                if not chooses:
                    raise
                variants[name] = Variant(name, made=False, reason=f"{type(error).__name__}: {error}"[:500])
                continue
            files[name] = where(name)
            variants[name] = Variant(name, plan=plan, check=check, bytes=files[name].stat().st_size)
        if measure:
            _measure(files, variants, example, task, split, threads, batch, repeats)
        chosen, why = choose(variants, int8, max_drop, task is not None)
        if chooses:
            path = atomic_write(directory / "model.onnx", lambda tmp_path: shutil.copyfile(files[chosen], tmp_path))
            paths = {chosen: path}
        else:
            paths = {name: file for name, file in files.items() if name != "original"}
            path = paths[chosen]
    ordered = {name: variants[name] for name in VARIANTS if name in variants}
    return ExportReport(path, chosen, why, paths, ordered, int8, max_drop, split, threads, batch)


def _calibration(task: Task, model: nn.Module) -> Any:
    try:
        return fit_inputs(model, task.sample_inputs("train", CALIBRATION_SAMPLES))
    except RuntimeError:  # batches of different sequence lengths do not join: one batch then
        return fit_inputs(model, task.example_input(task.batch_size))


def _int8_variant(mode: str, model: nn.Module, fp32: Path | None, out: Path, example: Example, task: Task | None,
                  reference: nn.Module, calibration: Example | None, check_inputs: Example | None,
                  output: OutputSelector, exclude: Iterable[str]) -> tuple[Int8Plan, OutputAgreement]:
    """The ``mode`` int8 file of ``model`` at ``out``: its plan and its check."""
    if mode == "dynamic":
        return dynamic_variant(model, out, example, check_inputs, output=output, exclude=exclude)
    if calibration is None:
        if task is None:
            raise ExportError("static int8 needs calibration inputs: give calibration= or task=")
        calibration = _calibration(task, reference)
    samples, check = static_samples(calibration, check_inputs, 0.25)
    assert fp32 is not None  # every export but int8="dynamic" writes the fp32 file first
    return static_variant(model, fp32, out, example, samples, check, output=output, exclude=exclude)


def _measure(files: dict[str, Path], variants: dict[str, Variant], example: Example, task: Task | None,
             split: str | None, threads: int, batch: int, repeats: int) -> None:
    """Time every file side by side and take its metric on ``split``; ratios and drops against the
    reference model's file (else the fp32 file)."""
    tensors = tuple(t.detach().cpu() for t in split_example(example)[0])
    timed = compare_latency(files, batched(tensors, batch), threads=threads, repeats=repeats, rounds=5)
    for name, path in files.items():
        metric = None
        if task is not None:
            try:
                metric = onnx_metric(path, task, split or "val")
            except Exception as error:  # noqa: BLE001 - a file ONNX Runtime cannot run on the data
                variants[name] = replace(variants[name], made=False, reason=f"{type(error).__name__}: {error}"[:500])
                continue
        variants[name] = replace(variants[name], metric=metric, latency_ms=timed[name].median_ms)
    base = variants.get("original") or variants.get("fp32")
    if base is None or not base.made:
        return
    for name, v in list(variants.items()):
        if v.made and v.latency_ms is not None:
            drop = None if base.metric is None or v.metric is None else base.metric - v.metric
            variants[name] = replace(v, latency_ratio=v.latency_ms / base.latency_ms, drop=drop)


def choose(variants: dict[str, Variant], int8: str | bool, max_drop: float, measured_metric: bool = True) -> tuple[str, str]:
    """The variant to deploy and why: the one asked for; with ``"auto"`` the fastest whose drop is within
    ``max_drop`` (fp32 when no metric was measured), with True the fastest int8 file."""
    if isinstance(int8, str) and int8 in MODES:
        return f"int8-{int8}", f"int8={int8!r}"
    made = {k: v for k, v in variants.items() if v.made and k != "original"}
    if "fp32" not in made:
        raise ExportError(f"the fp32 ONNX file could not be measured: {variants['fp32'].reason}")
    if int8 is False:
        return "fp32", "int8=False"
    quantized = {k: v for k, v in made.items() if k.startswith("int8")}
    if int8 is True:
        if not quantized:
            reasons = "; ".join(f"{k}: {v.reason}" for k, v in variants.items() if k.startswith("int8"))
            raise ExportError(f"int8=True but no int8 file could be made ({reasons})")
        name = min(quantized, key=lambda k: quantized[k].latency_ms)
        return name, "int8=True: the fastest int8 file"
    if not measured_metric:
        return "fp32", "int8='auto' takes an int8 file only where its metric is measured within max_drop on a task; none was given"
    within = {k: v for k, v in made.items() if v.drop <= max_drop or k == "fp32"}
    name = min(within, key=lambda k: within[k].latency_ms)
    if name == "fp32":
        slower = [k for k in quantized if quantized[k].latency_ms >= made["fp32"].latency_ms]
        lossy = [k for k in quantized if k not in slower]
        return "fp32", (f"int8 files measured no faster ({', '.join(slower) or 'none'}) or beyond the drop "
                        f"({', '.join(lossy) or 'none'})" if quantized else "no int8 file could be made")
    return name, (f"fastest file within the drop of {max_drop:g} (measured {made[name].latency_ms:.3g} ms, "
                  f"fp32 {made['fp32'].latency_ms:.3g} ms)")
