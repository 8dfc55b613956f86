"""Export: the fp32 ONNX file checked against PyTorch, and int8 files ONNX Runtime runs.

- :mod:`~autocompress.export.fp32`: ``export_onnx`` (checked on ONNX Runtime), sessions and feeds;
- :mod:`~autocompress.export.static`: static QDQ int8 (``export_int8``), a fake-quantized model at
  its own precision; :mod:`~autocompress.export.graph` (graph surgery, module -> node names),
  :mod:`~autocompress.export.calibration`, :mod:`~autocompress.export.agreement` (outputs and
  metrics of ONNX files) serve it;
- :mod:`~autocompress.export.dynamic`: dynamic int8 of a transformer's Linear layers.
"""

from autocompress.export.agreement import (
    OutputAgreement,
    compare_onnx_outputs,
    onnx_metric,
    run_batched,
)
from autocompress.export.constants import (
    ACTIVATION_TYPES,
    CALIBRATION_METHODS,
    QUANTIZED_OPS,
)
from autocompress.export.dynamic import DynamicExport, export_dynamic_int8, int8_layers
from autocompress.export.fp32 import (
    CHECK_BATCH_SIZE,
    CHECK_SEED,
    ExportMismatchError,
    export_onnx,
    feed_names,
    input_names,
    onnx_session,
    rounding_envelope,
    run_session,
    session_feeds,
)
from autocompress.export.graph import layer_nodes, prepare_for_quantization
from autocompress.export.static import (
    Int8AccuracyError,
    Int8Export,
    deployed_int8,
    export_int8,
    float_twin,
    quantize_onnx_int8,
    quantized_weight_nodes,
    static_int8_layers,
)

__all__ = [
    "ACTIVATION_TYPES", "CALIBRATION_METHODS", "CHECK_BATCH_SIZE", "CHECK_SEED", "QUANTIZED_OPS", "DynamicExport",
    "ExportMismatchError", "Int8AccuracyError", "Int8Export", "OutputAgreement", "compare_onnx_outputs", "deployed_int8",
    "export_dynamic_int8", "export_int8", "export_onnx", "feed_names", "float_twin", "input_names", "int8_layers",
    "layer_nodes", "onnx_metric", "onnx_session", "prepare_for_quantization", "quantize_onnx_int8",
    "quantized_weight_nodes", "rounding_envelope", "run_batched", "run_session", "session_feeds", "static_int8_layers",
]
