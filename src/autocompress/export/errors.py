"""The one error of an export (:class:`ExportError`) and the two kinds a caller may tell apart."""

from __future__ import annotations

__all__ = ["ExportError", "ExportMismatchError", "Int8AccuracyError"]


class ExportError(RuntimeError):
    """The model could not be exported as asked: a bad setting, a layer no backend can run in int8,
    or a file whose outputs fail its check (one of the two kinds below)."""


class ExportMismatchError(ExportError):
    """The exported ONNX model's outputs differ from the PyTorch model's."""


class Int8AccuracyError(ExportError):
    """The int8 model's outputs differ from the fp32 model's by more than the tolerance."""
