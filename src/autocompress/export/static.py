"""Real int8 deployment: static post-training quantization of an exported ONNX model.

The fp32 file written by :func:`autocompress.export.export_onnx` is prepared
(``onnxruntime.quantization.shape_inference.quant_pre_process``: shape inference and
ONNX Runtime's basic graph fusions such as Conv+BatchNorm; then every BatchNormalization
that follows a Gemm is folded into it, a fusion ONNX Runtime does not do), calibrated on
representative inputs and quantized by ``onnxruntime.quantization.quantize_static`` in
QDQ format. ONNX Runtime's CPU provider fuses the QuantizeLinear / DequantizeLinear
pairs around Conv and Gemm into QLinearConv and QGemm, which run in int8.

Defaults, chosen by measurement (``benchmarks/hardware_int8.py`` and its ablation;
ORT CPU, 1 thread, an AVX2 CPU without VNNI): uint8 activations (QUInt8, asymmetric),
int8 weights per output channel on 7 bits (``reduce_range``), min/max calibration.

- uint8 rather than int8 activations: ONNX Runtime's CPU provider has u8 kernels for
  depthwise convs, Add and average pooling that it lacks for s8, so with int8 activations
  the residual net mnist1d-resnet ran its depthwise convs in fp32 between
  Quantize/DequantizeLinear pairs (int8: as slow as fp32 at batch 32; uint8: 2.9x faster).
  Plain convs and Gemms ran at the same speed and accuracy either way.
- ``reduce_range``: the u8*s8 kernels of AVX2 CPUs without VNNI add pairs of products in
  16 bits, which overflow with full-range 8-bit weights (ONNX Runtime documents this):
  on digits-cnn the int8 outputs strayed 16 % of the logit range from fp32, against 1 %
  with 7-bit weights, at the same speed.
- Per-channel weights: as fast as per-tensor on the convs, and more accurate.
- The model's outputs are left in float (the quantizer would round the logits to 8 bits
  on the calibrated range, clipping larger ones; dropping that pair is no slower).
  Keeping every Conv/Gemm output in float (``OpTypesToExcludeOutputQuantization``) was
  slower (the convs no longer fuse into QLinearConv), so it is not used.

A fake-quantized model (a policy's, with :class:`~autocompress.transforms.quantize.QuantWrapper`
layers) is deployed at its own precision: its layers at 8 bits or fewer (weights and inputs) run
in int8 with their already-quantized weights, every other Conv/Linear stays fp32
(:func:`~autocompress.export.plan.static_int8_layers`), and its activation fake-quantization is replaced by ONNX Runtime's
8-bit static ranges (so a 4- or 6-bit layer runs on the 8-bit grid: int8 is the narrowest type
ONNX Runtime's CPU kernels have).

Mixed precision: ``exclude`` names PyTorch modules (``"features.0"``) whose ONNX nodes
stay in fp32. The TorchScript exporter names a node after the modules it was called
in: module ``blocks.0.shortcut.0`` -> node ``/blocks/blocks.0/shortcut/shortcut.0/Conv``
(each scope is the module's qualified name from its last non-numeric part on);
:func:`layer_nodes` inverts that scheme."""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from onnxruntime.quantization import (
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from torch import Tensor, nn

from autocompress.calls import Example, OutputSelector
from autocompress.export.agreement import (
    OutputAgreement,
    compare_onnx_outputs,
)
from autocompress.export.calibration import (
    calibration_reader,
    sample_tensors,
)
from autocompress.export.constants import (
    ACTIVATION_TYPES,
    CALIBRATION_METHODS,
    CHECK_SAMPLES,
    DEFAULT_CALIBRATION_BATCH,
    QUANTIZED_OPS,
)
from autocompress.export.errors import Int8AccuracyError
from autocompress.export.fp32 import export_onnx
from autocompress.export.graph import (
    excluded_nodes,
    existing_file,
    prepare_for_quantization,
    remove_unused_initializers,
)
from autocompress.export.plan import Int8Plan, float_twin, plan_int8
from autocompress.files import atomic_write
from autocompress.quiet import summarising
from autocompress.transforms.quantize import QuantWrapper, freeze_weights


def _choice(what: str, value: str, allowed: dict) -> object:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; allowed: {', '.join(allowed)}")
    return allowed[value]


def _float_outputs(model: onnx.ModelProto) -> int:
    """Drop the QuantizeLinear -> DequantizeLinear pair in front of each graph output.

    The quantizer rounds the model's outputs (e.g. logits) to 8 bits on the calibrated
    range, clipping values beyond it; without the pair the last QGemm/QLinearConv writes
    float outputs directly (measured no slower). Returns the number of pairs removed.
    """
    graph = model.graph
    outputs = {o.name for o in graph.output}
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    removed = 0
    for dequant in [n for n in graph.node if n.op_type == "DequantizeLinear"]:
        quant = producers.get(dequant.input[0])
        if dequant.output[0] not in outputs or quant is None or quant.op_type != "QuantizeLinear":
            continue
        source = producers.get(quant.input[0])
        if (
            source is None
            or consumers.get(quant.input[0], 0) != 1
            or consumers.get(quant.output[0], 0) != 1
        ):
            continue
        source.output[list(source.output).index(quant.input[0])] = dequant.output[0]
        graph.node.remove(quant)
        graph.node.remove(dequant)
        removed += 1
    remove_unused_initializers(graph)
    return removed


def quantize_onnx_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration_inputs: Tensor | Sequence[Tensor],
    *,
    per_channel: bool = True,
    exclude: Iterable[str] = (),
    calibration_method: str = "minmax",
    activation_type: str = "uint8",
    reduce_range: bool = True,
    float_outputs: bool = True,
    preprocess: bool = True,
    calibration_batch_size: int = DEFAULT_CALIBRATION_BATCH,
) -> Path:
    """Statically quantize an fp32 ONNX model to int8 (QDQ format); return ``out_path``.

    ``calibration_inputs``: a tensor (or tuple, one per model input) of representative
    samples along dim 0, fed in batches of ``calibration_batch_size`` (for "entropy" and
    "percentile" a last, partial batch is dropped when there are several: ONNX Runtime's
    histogram collector needs equal batches). ``calibration_method``: "minmax", "entropy"
    or "percentile" (how activation ranges are chosen). ``activation_type``: "uint8" or
    "int8" (uint8 is the default: see the module docstring). Weights are int8, per output
    channel when ``per_channel``, on 7 bits when ``reduce_range`` (avoids the 16-bit
    overflow of ONNX Runtime's AVX2 u8*s8 kernels on CPUs without VNNI, which otherwise
    costs accuracy). ``float_outputs``: the model's outputs are not rounded to 8 bits.
    ``preprocess``: quantize the output of :func:`prepare_for_quantization` (else the file
    as it is). ``exclude``: PyTorch module names (or ONNX node names) of Conv/Gemm/MatMul
    layers to keep in fp32 (all of a module's layers when it has several).
    The file is written atomically (a failure leaves nothing at ``out_path``).
    """
    fp32_path = existing_file(fp32_path)
    inputs = sample_tensors(calibration_inputs)
    method = _choice("calibration_method", calibration_method, CALIBRATION_METHODS)
    act_type = _choice("activation_type", activation_type, ACTIVATION_TYPES)
    if calibration_batch_size < 1:
        raise ValueError(f"calibration_batch_size must be >= 1, got {calibration_batch_size}")
    if method != CalibrationMethod.MinMax and len(inputs[0]) > calibration_batch_size:
        full = len(inputs[0]) // calibration_batch_size * calibration_batch_size
        inputs = tuple(x[:full] for x in inputs)
    with tempfile.TemporaryDirectory(prefix="autocompress-int8-") as tmp:
        prepared = (
            prepare_for_quantization(fp32_path, Path(tmp) / "prepared.onnx")
            if preprocess
            else fp32_path
        )
        model = onnx.load(str(prepared))
        nodes_to_exclude = excluded_nodes(model, exclude)
        quantized = Path(tmp) / "quantized.onnx"
        with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print
            quantize_static(
                str(prepared),
                str(quantized),
                calibration_reader(model, inputs, calibration_batch_size),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                reduce_range=reduce_range,
                activation_type=act_type,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=nodes_to_exclude,
                calibrate_method=method,
            )
        result = onnx.load(str(quantized))
    if float_outputs:
        _float_outputs(result)
    onnx.checker.check_model(result)
    return atomic_write(out_path, lambda tmp_path: onnx.save(result, tmp_path))


def quantized_weight_nodes(path: str | Path) -> dict[str, bool]:
    """For each Conv/Gemm/MatMul node of an ONNX file: does its weight come from int8?

    True when the node's second input is produced by a DequantizeLinear.
    """
    model = onnx.load(str(existing_file(path)))
    dequantized = {
        out for n in model.graph.node if n.op_type == "DequantizeLinear" for out in n.output
    }
    return {
        node.name: len(node.input) > 1 and node.input[1] in dequantized
        for node in model.graph.node
        if node.op_type in QUANTIZED_OPS
    }


# ---------------------------------------------------------------- the backend and its check


def static_source(model: nn.Module, float_path: Path, example_input: Example, fp32_path: Path | None = None,
                  output: OutputSelector = None) -> Path:
    """The fp32 file static int8 quantizes: ``fp32_path`` (exported from ``model`` when None) for a float
    model; for a fake-quantized one, its :func:`~autocompress.export.plan.float_twin` with frozen weights
    (its layers' already-quantized weights), exported at ``float_path``."""
    if any(isinstance(m, QuantWrapper) for m in model.modules()):
        return export_onnx(float_twin(freeze_weights(model)), float_path, example_input, output=output)
    return fp32_path or export_onnx(model, float_path, example_input, output=output)


def static_int8(source: str | Path, out_path: str | Path, plan: Int8Plan, calibration_inputs: Tensor | Sequence[Tensor],
                **settings: object) -> Path:
    """The static backend: :func:`quantize_onnx_int8` of ``source`` keeping the plan's fp32 layers (and its
    ``exclude``) in fp32; ``settings`` as there."""
    return quantize_onnx_int8(source, out_path, calibration_inputs, exclude=[*plan.exclude, *plan.fp32], **settings)


def static_samples(calibration_inputs: Example, check_inputs: Example | None,
                   check_tolerance: float | None) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """(calibration, check) samples, the check's defaulting to the first 256 calibration samples; ValueError
    for empty or mismatched inputs and a tolerance that is not > 0 (or None)."""
    calibration = sample_tensors(calibration_inputs)
    check = (
        sample_tensors(check_inputs, "check_inputs")
        if check_inputs is not None
        else tuple(x[:CHECK_SAMPLES] for x in calibration)
    )
    if check_tolerance is not None and not check_tolerance > 0:
        raise ValueError(f"check_tolerance must be > 0 or None, got {check_tolerance}")
    return calibration, check


def static_variant(
    model: nn.Module,
    fp32_path: Path,
    out: Path,
    example_input: Example,
    calibration: tuple[Tensor, ...],
    check: tuple[Tensor, ...],
    *,
    output: OutputSelector = None,
    exclude: Iterable[str] = (),
    check_tolerance: float | None = 0.25,
    **settings: object,
) -> tuple[Int8Plan, OutputAgreement]:
    """Write ``model``'s static int8 file at ``out`` (only once it passes); its plan and its check.

    The plan is made on the file :func:`static_source` gives, which :func:`static_int8` quantizes; the
    int8 outputs are compared with ``fp32_path``'s (``model`` exported as it is) on ``check``, and a max
    abs difference beyond ``check_tolerance`` times the fp32 outputs' max magnitude raises
    :class:`~autocompress.export.errors.Int8AccuracyError` (``None``: no limit).
    """
    with tempfile.TemporaryDirectory(prefix="autocompress-int8-") as tmp:
        source = static_source(model, Path(tmp) / "float.onnx", example_input, fp32_path, output)
        plan = plan_int8(model, "static", onnx.load(str(source)), exclude)
        candidate = static_int8(source, Path(tmp) / out.name, plan, calibration, **settings)
        agreement = compare_onnx_outputs(fp32_path, candidate, check)
        if check_tolerance is not None and agreement.relative_diff > check_tolerance:
            raise Int8AccuracyError(
                f"int8 outputs differ from fp32 by up to {agreement.max_abs_diff:.3g} "
                f"({agreement.relative_diff:.1%} of the fp32 outputs' max |value| "
                f"{agreement.output_scale:.3g}; tolerance {check_tolerance:.1%}); argmax agrees on "
                f"{agreement.argmax_agreement:.1f} % of {agreement.samples} samples. Try "
                "calibration_method='percentile' or 'entropy', more calibration data, or "
                "exclude= the most sensitive layers"
            )
        atomic_write(out, lambda tmp_path: shutil.copyfile(candidate, tmp_path))
    return plan, agreement


@summarising("exporting the model to int8 ONNX")
def deployed_int8(model: nn.Module, path: str | Path, example_input: Example,
                  calibration_inputs: Example | None = None, *, float_outputs: bool = True,
                  output: OutputSelector = None) -> Path:
    """Write the int8 file of ``model`` as :func:`export_int8` deploys it (default settings; a
    fake-quantized model at its own precision), without the fp32 file or the output check: what a
    latency measurement times. ``calibration_inputs`` default to the example input;
    ``float_outputs=False`` keeps the outputs' quantize/dequantize pair (a layer timed alone: only
    then does ONNX Runtime fuse it into QLinearConv / QGemm, as it does inside a network)."""
    with tempfile.TemporaryDirectory(prefix="autocompress-int8-") as tmp:
        source = static_source(model, Path(tmp) / "float.onnx", example_input, output=output)
        plan = plan_int8(model, "static", onnx.load(str(source)))
        calibration = example_input if calibration_inputs is None else calibration_inputs
        return static_int8(source, path, plan, calibration, float_outputs=float_outputs)


# ---------------------------------------------------------------- export_int8: fp32 and int8 files at given paths


@dataclass(frozen=True)
class Int8Export:
    """An fp32 and an int8 ONNX file of one model.

    Sizes are in bytes; ``size_ratio`` = fp32 bytes / int8 bytes. ``agreement`` compares
    the int8 outputs with the fp32 ONNX outputs on the check inputs. ``fp32_nodes``: the
    Conv/Gemm/MatMul nodes kept in fp32 (from ``exclude``). ``plan``: the layers run in int8.
    """

    fp32_path: Path
    int8_path: Path
    fp32_bytes: int
    int8_bytes: int
    agreement: OutputAgreement
    fp32_nodes: list[str] = field(default_factory=list)
    plan: Int8Plan | None = None

    @property
    def size_ratio(self) -> float:
        return self.fp32_bytes / self.int8_bytes

    @property
    def max_abs_diff(self) -> float:
        return self.agreement.max_abs_diff


def _int8_path(path: Path) -> Path:
    """``model.onnx`` -> ``model.int8.onnx``."""
    return path.with_name(f"{path.stem}.int8{path.suffix or '.onnx'}")


@summarising("exporting the model to int8 ONNX")
def export_int8(
    model: nn.Module,
    path: str | Path,
    example_input: Example,
    calibration_inputs: Example,
    *,
    output: OutputSelector = None,
    int8_path: str | Path | None = None,
    exclude: Iterable[str] = (),
    per_channel: bool = True,
    calibration_method: str = "minmax",
    activation_type: str = "uint8",
    reduce_range: bool = True,
    check_inputs: Tensor | Sequence[Tensor] | None = None,
    check_tolerance: float | None = 0.25,
) -> Int8Export:
    """Export ``model`` to fp32 ONNX at ``path`` and to int8 at ``int8_path`` (what
    :func:`autocompress.export.export` does with ``int8="static"``, at paths of your choice).

    ``int8_path`` defaults to ``path`` with ``.int8`` before the suffix. The fp32 file
    comes from :func:`export_onnx` (checked against PyTorch); the int8 one from
    :func:`quantize_onnx_int8` calibrated on ``calibration_inputs``. The int8 outputs are
    compared with the fp32 ONNX outputs on ``check_inputs`` (default: the first 256
    calibration samples); when the max abs difference exceeds ``check_tolerance`` times
    the fp32 outputs' max magnitude, :class:`Int8AccuracyError` is raised and no int8 file
    is left behind (``None`` skips the check). A fake-quantized ``model`` is deployed at its own
    precision (module docstring): its fp32 file is the model as it is, and the int8 outputs are
    compared with that. The model is never modified. Inputs may be keyword tensors (dicts with the
    same keys, in the same order); ``output`` selects the model's output as in :func:`export_onnx`.
    """
    path = Path(path)
    out = Path(int8_path) if int8_path is not None else _int8_path(path)
    calibration, check = static_samples(calibration_inputs, check_inputs, check_tolerance)
    export_onnx(model, path, example_input, output=output)
    plan, agreement = static_variant(
        model, path, out, example_input, calibration, check, output=output, exclude=exclude,
        check_tolerance=check_tolerance, per_channel=per_channel, calibration_method=calibration_method,
        activation_type=activation_type, reduce_range=reduce_range,
    )
    kept = [name for name, quantized in quantized_weight_nodes(out).items() if not quantized]
    return Int8Export(
        fp32_path=path,
        int8_path=out,
        fp32_bytes=path.stat().st_size,
        int8_bytes=out.stat().st_size,
        agreement=agreement,
        fp32_nodes=kept,
        plan=plan,
    )
