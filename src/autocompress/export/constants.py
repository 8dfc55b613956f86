"""The int8 settings (static ones chosen by measurement: see export/static.py) that several export modules read."""

from onnxruntime.quantization import CalibrationMethod, QuantType

QUANTIZED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
"""ONNX ops with weights that int8 quantization (and ``exclude``) applies to."""
DYNAMIC_OPS = ("MatMul",)
"""ONNX ops of a Linear that dynamic quantization turns into MatMulInteger."""

CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
ACTIVATION_TYPES = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
DEFAULT_CALIBRATION_BATCH = 64
CHECK_SAMPLES = 256
