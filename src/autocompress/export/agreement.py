"""How an ONNX file's outputs agree with another file's or with the PyTorch model's, and its metric on a split, run in batches on ONNX Runtime."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from autocompress.calls import Example, OutputSelector, bind, split_example
from autocompress.export.calibration import sample_tensors
from autocompress.export.fp32 import onnx_session, run_session
from autocompress.export.graph import existing_file
from autocompress.task import Task, reduce
from autocompress.trace import flatten_tensors


@dataclass(frozen=True)
class OutputAgreement:
    """How close an ONNX file's first output is to a reference's (another file, or PyTorch) on the same inputs.

    ``max_abs_diff`` in output units; ``output_scale`` is the reference's max |output|;
    ``argmax_agreement`` in percent of samples (NaN for outputs with fewer than 2 dims);
    ``min_cosine``: the lowest cosine similarity of a sample's output to the reference's;
    ``reference``: what it was compared with ("PyTorch", or the reference file's name).
    """

    max_abs_diff: float
    output_scale: float
    argmax_agreement: float
    samples: int
    min_cosine: float = math.nan
    reference: str = ""

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
    reference = run_batched(reference_path, tensors, batch_size, threads)
    other = run_batched(other_path, tensors, batch_size, threads)
    return output_agreement(reference, other, Path(reference_path).name)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(norms, np.finfo(np.float64).tiny)


def output_agreement(reference: np.ndarray, other: np.ndarray, name: str) -> OutputAgreement:
    """How close ``other`` (samples along dim 0) is to ``reference``, the output of ``name``."""
    reference, other = reference.astype(np.float64), other.astype(np.float64)
    agreement = math.nan
    if reference.ndim >= 2:
        agreement = float((reference.argmax(1) == other.argmax(1)).mean() * 100.0)
    return OutputAgreement(
        max_abs_diff=float(np.max(np.abs(reference - other))),
        output_scale=float(np.max(np.abs(reference))),
        argmax_agreement=agreement,
        samples=len(reference),
        min_cosine=float(_cosines(other, reference).min()),
        reference=name,
    )


def model_agreement(model: nn.Module, path: str | Path, inputs: Example, output: OutputSelector = None) -> OutputAgreement:
    """How close the ONNX file's first output is to ``model``'s (PyTorch, eval mode, ``output`` selected) on
    ``inputs`` (a tensor, positional tensors or a dict of keyword tensors, run in one batch). The
    model's training modes are restored."""
    tensors, names = split_example(inputs)
    checks = tuple(x.detach().cpu() for x in tensors)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    runner = bind(model, names, output)
    modes = [(m, m.training) for m in runner.modules()]
    try:
        runner.eval()
        with torch.no_grad():
            expected = flatten_tensors(runner(*(x.to(device) for x in checks)), strict=True)[0].cpu().numpy()
    finally:
        for module, training in modes:
            module.training = training
    got = run_session(onnx_session(path), checks)[0]
    return output_agreement(expected, got, "PyTorch")


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
