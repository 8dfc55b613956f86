"""How an ONNX file agrees with another, and its metric on a split, run in batches on ONNX Runtime."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from autocompress.calls import split_example
from autocompress.export.calibration import sample_tensors
from autocompress.export.fp32 import onnx_session, run_session
from autocompress.export.graph import existing_file
from autocompress.task import Task, reduce


@dataclass(frozen=True)
class OutputAgreement:
    """How close two ONNX models' first outputs are on the same inputs.

    ``max_abs_diff`` in output units; ``output_scale`` is the reference's max |output|;
    ``argmax_agreement`` in percent of samples (NaN for outputs with fewer than 2 dims).
    """

    max_abs_diff: float
    output_scale: float
    argmax_agreement: float
    samples: int

    @property
    def relative_diff(self) -> float:
        """``max_abs_diff / output_scale`` (dimensionless)."""
        if self.output_scale > 0:
            return self.max_abs_diff / self.output_scale
        return 0.0 if self.max_abs_diff == 0 else math.inf


def run_batched(
    path: str | Path, inputs: tuple[Tensor, ...], batch_size: int = 256, threads: int = 1
) -> np.ndarray:
    """The single output of an ONNX model over ``inputs``, run in ONNX Runtime ``batch_size`` samples at a time."""
    session = onnx_session(path, threads=threads)
    if len(session.get_outputs()) != 1:
        raise ValueError(
            f"{str(path)!r} has {len(session.get_outputs())} outputs; only single-output "
            "models are supported here"
        )
    outputs = [
        run_session(session, tuple(x[start : start + batch_size] for x in inputs))[0]
        for start in range(0, len(inputs[0]), batch_size)
    ]
    return np.concatenate(outputs)


def compare_onnx_outputs(
    reference_path: str | Path,
    other_path: str | Path,
    inputs: Tensor | Sequence[Tensor],
    *,
    batch_size: int = 256,
    threads: int = 1,
) -> OutputAgreement:
    """Run both ONNX models on ``inputs`` and compare ``other``'s outputs to ``reference``'s."""
    tensors = sample_tensors(inputs, "inputs")
    reference = run_batched(reference_path, tensors, batch_size, threads).astype(np.float64)
    other = run_batched(other_path, tensors, batch_size, threads).astype(np.float64)
    agreement = math.nan
    if reference.ndim >= 2:
        agreement = float((reference.argmax(1) == other.argmax(1)).mean() * 100.0)
    return OutputAgreement(
        max_abs_diff=float(np.max(np.abs(reference - other))),
        output_scale=float(np.max(np.abs(reference))),
        argmax_agreement=agreement,
        samples=len(reference),
    )


def onnx_metric(
    path: str | Path,
    task: Task,
    split: str = "test",
    batch_size: int = 256,
    threads: int = 1,
) -> float:
    """The task's metric (e.g. accuracy in percent) of an ONNX model run in ONNX Runtime on ``split``,
    streamed batch by batch (keyword inputs are fed by name)."""
    session = onnx_session(existing_file(path), threads=threads)
    names = [i.name for i in session.get_inputs()]

    def pairs() -> Iterator[tuple[Tensor, Tensor]]:
        for inputs, targets in task.loader(split, shuffle=False):
            if isinstance(inputs, Mapping):
                missing = [n for n in names if n not in inputs]
                if missing:
                    raise ValueError(f"{str(path)!r} takes inputs {names}; the {split} batches lack {missing}")
                tensors = tuple(inputs[n] for n in names)
            else:
                tensors = split_example(inputs)[0]
            for start in range(0, len(targets), batch_size):
                part = tuple(t[start:start + batch_size] for t in tensors)
                yield torch.from_numpy(run_session(session, part)[0]).float(), targets[start:start + batch_size]

    return reduce(task.metric, task.metric_fn(), pairs())


# ---------------------------------------------------------------- model -> int8 file
