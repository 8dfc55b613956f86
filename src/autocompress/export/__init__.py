"""Export: the fp32 ONNX file checked against PyTorch, and int8 files ONNX Runtime runs.

The package is callable: ``autocompress.export(model, directory, int8=...)`` is :func:`export`, the one
entry point (``autocompress.export.export`` too; ``import autocompress.export`` and
``from autocompress.export import ...`` still reach the modules below).

- :mod:`~autocompress.export.entry`: :func:`export` -> :class:`ExportReport` (:mod:`~autocompress.export.report`),
  every failure an :class:`ExportError` (:mod:`~autocompress.export.errors`);
- :mod:`~autocompress.export.plan`: which layers run in int8 (:class:`Int8Plan`), computed once for
  either backend;
- :mod:`~autocompress.export.fp32`: ``export_onnx`` (checked on ONNX Runtime), sessions and feeds;
- :mod:`~autocompress.export.static`: static QDQ int8 (and ``export_int8``), a fake-quantized model at
  its own precision; :mod:`~autocompress.export.graph` (graph surgery, module -> node names) and
  :mod:`~autocompress.export.calibration` serve it;
- :mod:`~autocompress.export.dynamic`: dynamic int8 of Linear layers (and ``export_dynamic_int8``);
- :mod:`~autocompress.export.agreement` (a file's outputs against another's or PyTorch's, its metric)
  and :mod:`~autocompress.export.timing` (its latency in ONNX Runtime, side by side).
"""

import sys
import types

from autocompress.export.agreement import (
    OutputAgreement,
    compare_onnx_outputs,
    model_agreement,
    onnx_metric,
    run_batched,
)
from autocompress.export.constants import (
    ACTIVATION_TYPES,
    CALIBRATION_METHODS,
    QUANTIZED_OPS,
)
from autocompress.export.dynamic import DynamicExport, export_dynamic_int8
from autocompress.export.entry import INT8_CHOICES, export
from autocompress.export.errors import ExportError, ExportMismatchError, Int8AccuracyError
from autocompress.export.fp32 import (
    CHECK_BATCH_SIZE,
    CHECK_SEED,
    export_onnx,
    feed_names,
    input_names,
    onnx_session,
    rounding_envelope,
    run_session,
    session_feeds,
)
from autocompress.export.graph import layer_nodes, prepare_for_quantization
from autocompress.export.plan import (
    Int8Plan,
    float_twin,
    int8_layers,
    plan_int8,
    static_int8_layers,
)
from autocompress.export.report import ExportReport, Variant
from autocompress.export.static import (
    Int8Export,
    deployed_int8,
    export_int8,
    quantize_onnx_int8,
    quantized_weight_nodes,
)
from autocompress.export.timing import LatencyResult, batched, compare_latency, measure_ort_latency

__all__ = [
    "ACTIVATION_TYPES", "CALIBRATION_METHODS", "CHECK_BATCH_SIZE", "CHECK_SEED", "INT8_CHOICES", "QUANTIZED_OPS",
    "DynamicExport", "ExportError", "ExportMismatchError", "ExportReport", "Int8AccuracyError", "Int8Export", "Int8Plan",
    "LatencyResult", "OutputAgreement", "Variant", "batched", "compare_latency", "compare_onnx_outputs", "deployed_int8",
    "export", "export_dynamic_int8", "export_int8", "export_onnx", "feed_names", "float_twin", "input_names",
    "int8_layers", "layer_nodes", "measure_ort_latency", "model_agreement", "onnx_metric", "onnx_session", "plan_int8",
    "prepare_for_quantization", "quantize_onnx_int8", "quantized_weight_nodes", "rounding_envelope", "run_batched",
    "run_session", "session_feeds", "static_int8_layers",
]


class _CallablePackage(types.ModuleType):
    """This package, callable as its entry point, so that ``autocompress.export`` names both the package
    and :func:`export` without either hiding the other."""

    __call__ = staticmethod(export)


sys.modules[__name__].__class__ = _CallablePackage
