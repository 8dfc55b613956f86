"""Calibration data for static int8: representative inputs fed to ONNX Runtime's calibrator by graph input name."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
)
from torch import Tensor

from autocompress.calls import split_example
from autocompress.export.fp32 import feed_names, input_names


class TensorCalibrationReader(CalibrationDataReader):
    """Feeds calibration tensors to ONNX Runtime's calibrator in batches of ``batch_size``."""

    def __init__(self, inputs: tuple[Tensor, ...], names: Sequence[str], batch_size: int) -> None:
        self.arrays = [x.detach().cpu().numpy() for x in inputs]
        self.names = list(names)
        self.batch_size = batch_size
        self.start = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        total = len(self.arrays[0])
        if self.start >= total:
            return None
        stop = self.start + self.batch_size
        feed = {
            name: array[self.start : stop]
            for name, array in zip(self.names, self.arrays, strict=True)
        }
        self.start = stop
        return feed

    def rewind(self) -> None:
        self.start = 0


def sample_tensors(
    inputs: Tensor | Sequence[Tensor], what: str = "calibration_inputs"
) -> tuple[Tensor, ...]:
    """``inputs`` as positional tensors sharing a non-empty dim 0 (samples)."""
    try:
        tensors, _ = split_example(inputs)
    except TypeError as error:
        raise TypeError(f"{what}: {error}") from None
    if not tensors:
        raise ValueError(f"{what} is empty; give at least one input tensor")
    counts = {len(x) if x.dim() > 0 else 0 for x in tensors}
    if counts == {0}:
        raise ValueError(
            f"{what} holds no samples (dim 0 is empty); int8 calibration and checks need "
            "representative inputs, e.g. a few hundred training samples"
        )
    if len(counts) != 1:
        raise ValueError(f"{what} disagree on the number of samples (dim 0): {sorted(counts)}")
    return tensors


def graph_input_names(model: onnx.ModelProto, count: int) -> list[str]:
    """The names of ``count`` inputs in export order (``input`` / ``input_0..``, or the keywords of a
    model exported from a dict) in the graph."""
    initializers = {init.name for init in model.graph.initializer}
    present = [i.name for i in model.graph.input if i.name not in initializers]
    try:
        return feed_names(present, count)
    except ValueError:
        raise ValueError(
            f"the ONNX model's inputs {present} are not the {count} input(s) "
            f"{input_names(count)} that calibration_inputs provide"
        ) from None


def calibration_reader(
    model: onnx.ModelProto, inputs: tuple[Tensor, ...], batch_size: int
) -> TensorCalibrationReader:
    names = graph_input_names(model, len(inputs))
    present = {i.name for i in model.graph.input}
    kept = [(name, x) for name, x in zip(names, inputs, strict=True) if name in present]
    return TensorCalibrationReader(tuple(x for _, x in kept), [n for n, _ in kept], batch_size)


# ---------------------------------------------------------------- graph preparation
