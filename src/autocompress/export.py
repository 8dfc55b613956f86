"""Export of compressed models.

ONNX (fp32): :func:`export_onnx` writes the file atomically with the legacy
TorchScript exporter (fast, dynamic batch axis) and, by default, checks it in ONNX
Runtime against PyTorch on the example input and on a second, random input.
"""

from __future__ import annotations

import copy
import os
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import Tensor, nn

from autocompress.trace import as_inputs, flatten_tensors
from autocompress.transforms.quantize import QuantWrapper, freeze_weights

__all__ = [
    "ExportMismatchError",
    "export_onnx",
    "onnx_session",
    "run_session",
    "session_feeds",
]

CHECK_BATCH_SIZE = 3
CHECK_SEED = 0


class ExportMismatchError(RuntimeError):
    """The exported ONNX model's outputs differ from the PyTorch model's."""


# ---------------------------------------------------------------- helpers


def input_names(count: int) -> list[str]:
    """ONNX input names: ``input`` for one input, ``input_0 .. input_n`` for several."""
    return ["input"] if count == 1 else [f"input_{i}" for i in range(count)]


def _output_names(count: int) -> list[str]:
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


def onnx_session(path: str | Path, threads: int | None = None) -> ort.InferenceSession:
    """A CPU ONNX Runtime session with all graph optimizations; ``threads`` intra-op threads."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1 or None (all cores), got {threads}")
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def session_feeds(session: ort.InferenceSession, inputs: Sequence[Tensor]) -> dict[str, np.ndarray]:
    """The feed dict for ``inputs`` in export order (inputs the graph dropped are skipped)."""
    wanted = {node.name for node in session.get_inputs()}
    named = zip(input_names(len(inputs)), inputs, strict=True)
    return {name: x.detach().cpu().numpy() for name, x in named if name in wanted}


def run_session(session: ort.InferenceSession, inputs: Sequence[Tensor]) -> list[np.ndarray]:
    """Run ``session`` on ``inputs`` given in export order."""
    return session.run(None, session_feeds(session, inputs))


def _random_like(x: Tensor, batch_size: int, generator: torch.Generator) -> Tensor:
    """A random tensor shaped like ``x`` with dim 0 = ``batch_size``, values in ``x``'s style."""
    shape = (batch_size, *x.shape[1:])
    if x.dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=generator).bool()
    if not x.dtype.is_floating_point:
        low, high = int(x.min()), int(x.max())
        return torch.randint(low, high + 1, shape, generator=generator, dtype=x.dtype)
    return torch.randn(shape, generator=generator).to(x.dtype)


def _compare(
    got: Sequence[np.ndarray],
    expected: Sequence[Tensor],
    rtol: float,
    atol: float,
    what: str,
) -> None:
    """Raise ExportMismatchError naming the worst error when outputs differ."""
    if len(got) != len(expected):
        raise ExportMismatchError(
            f"ONNX model returned {len(got)} outputs, PyTorch {len(expected)} ({what})"
        )
    for name, onnx_out, torch_out in zip(_output_names(len(got)), got, expected, strict=True):
        reference = torch_out.detach().cpu().numpy()
        if onnx_out.shape != reference.shape:
            raise ExportMismatchError(
                f"ONNX output {name!r} has shape {onnx_out.shape}, PyTorch {reference.shape} ({what})"
            )
        if np.allclose(onnx_out, reference, rtol=rtol, atol=atol, equal_nan=True):
            continue
        abs_err = np.abs(onnx_out.astype(np.float64) - reference.astype(np.float64))
        rel_err = abs_err / np.maximum(
            np.abs(reference.astype(np.float64)), np.finfo(np.float32).tiny
        )
        raise ExportMismatchError(
            f"ONNX Runtime output {name!r} differs from PyTorch on {what}: "
            f"max abs error {np.nanmax(abs_err):.3g}, max rel error {np.nanmax(rel_err):.3g} "
            f"(rtol={rtol:g}, atol={atol:g})"
        )


def _check_file(
    path: Path,
    model: nn.Module,
    inputs: tuple[Tensor, ...],
    rtol: float,
    atol: float,
    dynamic_batch: bool,
) -> None:
    onnx.checker.check_model(str(path))
    session = onnx_session(path)
    generator = torch.Generator().manual_seed(CHECK_SEED)
    batch_size = CHECK_BATCH_SIZE if dynamic_batch else inputs[0].shape[0]
    random_inputs = tuple(_random_like(x, batch_size, generator) for x in inputs)
    cases = [
        (inputs, "the example input"),
        (random_inputs, f"a random input of batch size {batch_size}"),
    ]
    for case_inputs, what in cases:
        with torch.no_grad():
            expected = flatten_tensors(model(*case_inputs), strict=True)
        _compare(run_session(session, case_inputs), expected, rtol, atol, what)


def _on_cpu(model: nn.Module) -> bool:
    tensors = [*model.parameters(), *model.buffers()]
    return all(t.device.type == "cpu" for t in tensors)


# ---------------------------------------------------------------- export


def export_onnx(
    model: nn.Module,
    path: str | Path,
    example_input: Tensor | tuple,
    *,
    check: bool = True,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    opset: int = 17,
    dynamic_batch: bool = True,
) -> Path:
    """Export ``model`` (eval mode, CPU) to an fp32 ONNX file at ``path``; return the path.

    Inputs are named ``input`` (or ``input_0..``), outputs ``output`` (or
    ``output_0..``); dim 0 is a dynamic ``batch`` axis unless ``dynamic_batch=False``.
    With ``check`` the file passes ``onnx.checker`` and ONNX Runtime must reproduce
    PyTorch within ``rtol``/``atol`` on the example input and on a random batch-3
    input, else :class:`ExportMismatchError` is raised and nothing is written. The
    user's model is never modified (a CUDA model is copied to the CPU).
    """
    path = Path(path)
    inputs = tuple(x.detach().cpu() for x in as_inputs(example_input))
    cpu_model = model if _on_cpu(model) else copy.deepcopy(model).cpu()
    if any(isinstance(m, QuantWrapper) for m in cpu_model.modules()):
        cpu_model = freeze_weights(cpu_model)  # quantized weights become constants in the graph
    modes = [(m, m.training) for m in cpu_model.modules()]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        cpu_model.eval()
        with torch.no_grad():
            n_outputs = len(flatten_tensors(cpu_model(*inputs), strict=True))
        names_in, names_out = input_names(len(inputs)), _output_names(n_outputs)
        dynamic_axes = (
            {name: {0: "batch"} for name in names_in + names_out} if dynamic_batch else None
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                cpu_model,
                inputs,
                str(tmp_path),
                dynamo=False,
                input_names=names_in,
                output_names=names_out,
                dynamic_axes=dynamic_axes,
                opset_version=opset,
                do_constant_folding=True,
            )
        if check:
            _check_file(tmp_path, cpu_model, inputs, rtol, atol, dynamic_batch)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
        for module, training in modes:
            module.training = training
    return path
