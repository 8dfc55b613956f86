"""Export of compressed models.

ONNX (fp32): :func:`export_onnx` writes the file atomically with the legacy
TorchScript exporter (fast, dynamic batch axis) and, by default, checks it in ONNX
Runtime against PyTorch on the example input and on a second, random input.
"""

from __future__ import annotations

import copy
import functools
import os
import uuid
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import Tensor, nn

from autocompress.calls import Example, OutputSelector, bind, split_example
from autocompress.export.errors import ExportMismatchError
from autocompress.quiet import collected_warnings
from autocompress.trace import flatten_tensors
from autocompress.transforms.quantize import ActivationQuantizer, QuantWrapper, freeze_weights

__all__ = [
    "export_onnx",
    "onnx_session",
    "run_session",
    "session_feeds",
]

CHECK_BATCH_SIZE = 3
CHECK_SEED = 0


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


def feed_names(graph_inputs: Sequence[str], count: int) -> list[str]:
    """The names of ``count`` inputs given in export order, for a graph whose inputs are ``graph_inputs``.

    A file exported from positional inputs names them ``input`` / ``input_0..`` (unused ones may be
    dropped from the graph); one exported from keyword inputs (a dict) uses the keywords, in order.
    """
    positional = input_names(count)
    if set(graph_inputs) <= set(positional):
        return positional
    if len(graph_inputs) == count:
        return list(graph_inputs)
    raise ValueError(f"the ONNX model's inputs {list(graph_inputs)} are not the {count} input(s) given; "
                     "give them as a dict keyed by the model's input names")


def session_feeds(session: ort.InferenceSession, inputs: Sequence[Tensor] | dict[str, Tensor]) -> dict[str, np.ndarray]:
    """The feed dict for ``inputs`` in export order, or keyed by input name (inputs the graph dropped are skipped)."""
    graph_inputs = [node.name for node in session.get_inputs()]
    if isinstance(inputs, dict):
        named = list(inputs.items())
    else:
        named = list(zip(feed_names(graph_inputs, len(inputs)), inputs, strict=True))
    return {name: x.detach().cpu().numpy() for name, x in named if name in graph_inputs}


def run_session(session: ort.InferenceSession, inputs: Sequence[Tensor] | dict[str, Tensor]) -> list[np.ndarray]:
    """Run ``session`` on ``inputs`` given in export order (or as a dict keyed by input name)."""
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


#: how far (in quantization steps) the rounding envelope moves every activation before rounding
ROUNDING_NUDGE = 0.02
#: how many times the rounding envelope a quantized model's ONNX output may differ from PyTorch's
ENVELOPE_FACTOR = 2.0


def rounding_envelope(model: nn.Module, inputs: tuple[Tensor, ...], expected: Sequence[Tensor]) -> list[np.ndarray] | None:
    """How far ``model``'s outputs move when its activation quantizers round values near a rounding
    boundary the other way (every value within ``ROUNDING_NUDGE`` of a step's boundary, up, then down):
    per output, the largest change. ``None`` for a model without active activation quantizers.

    Where a value lands within an ulp of a boundary, ONNX Runtime (summing in another order) may round
    it to the neighbouring step; that difference grows through a deep network. It is not a wrong
    export, and it is bounded by what rounding those values the other way does.
    """
    quantizers = [m for m in model.modules() if isinstance(m, ActivationQuantizer) and m.bits < 32]
    if not quantizers:
        return None
    envelope = [np.zeros(tuple(t.shape)) for t in expected]
    try:
        for nudge in (ROUNDING_NUDGE, -ROUNDING_NUDGE):
            for quantizer in quantizers:
                quantizer.nudge = nudge
            with torch.no_grad():
                moved = flatten_tensors(model(*inputs), strict=True)
            for i, (m, e) in enumerate(zip(moved, expected, strict=True)):
                change = (m.double() - e.double()).abs().cpu().numpy()
                envelope[i] = np.maximum(envelope[i], change)
    finally:
        for quantizer in quantizers:
            quantizer.nudge = 0.0
    return envelope


def _compare(
    got: Sequence[np.ndarray],
    expected: Sequence[Tensor],
    rtol: float,
    atol: float,
    what: str,
    envelope: Callable[[], list[np.ndarray] | None] | None = None,
) -> None:
    """Raise ExportMismatchError naming the worst error when outputs differ.

    ``envelope``: for a fake-quantized model, its :func:`rounding_envelope`; an output whose error
    stays within ``ENVELOPE_FACTOR`` times the envelope's largest value (plus ``atol``) passes.
    """
    bounds: list[np.ndarray] | None = None
    if len(got) != len(expected):
        raise ExportMismatchError(
            f"ONNX model returned {len(got)} outputs, PyTorch {len(expected)} ({what})"
        )
    for index, (name, onnx_out, torch_out) in enumerate(zip(_output_names(len(got)), got, expected, strict=True)):
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
        limit = ""
        if envelope is not None:
            if bounds is None:
                bounds = envelope() or []
            if bounds:
                allowed = ENVELOPE_FACTOR * float(bounds[index].max()) + atol
                if float(np.nanmax(abs_err)) <= allowed:
                    continue
                limit = f"; beyond {ENVELOPE_FACTOR:g}x the quantized layers' rounding envelope ({allowed:.3g})"
        raise ExportMismatchError(
            f"ONNX Runtime output {name!r} differs from PyTorch on {what}: "
            f"max abs error {np.nanmax(abs_err):.3g}, max rel error {np.nanmax(rel_err):.3g} "
            f"(rtol={rtol:g}, atol={atol:g}{limit})"
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

        envelope = functools.partial(rounding_envelope, model, case_inputs, expected)
        _compare(run_session(session, case_inputs), expected, rtol, atol, what, envelope)


def _on_cpu(model: nn.Module) -> bool:
    tensors = [*model.parameters(), *model.buffers()]
    return all(t.device.type == "cpu" for t in tensors)


# ---------------------------------------------------------------- export


def export_onnx(
    model: nn.Module,
    path: str | Path,
    example_input: Example,
    *,
    output: OutputSelector = None,
    check: bool = True,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    opset: int = 17,
    dynamic_batch: bool = True,
) -> Path:
    """Export ``model`` (eval mode, CPU) to an fp32 ONNX file at ``path``; return the path.

    ``example_input``: a tensor, positional tensors or a dict of keyword tensors. Inputs are
    named ``input`` (or ``input_0..``), or by their keywords for a dict; outputs ``output`` (or
    ``output_0..``): every tensor of the model's output, or the one ``output`` selects (a key such as
    ``"logits"``, an index or a callable). Dim 0 is a dynamic ``batch`` axis unless
    ``dynamic_batch=False``. With ``check`` the file passes ``onnx.checker`` and ONNX Runtime must
    reproduce PyTorch within ``rtol``/``atol`` on the example input and on a random batch-3 input,
    else :class:`ExportMismatchError` is raised and nothing is written. A fake-quantized model may
    differ by a quantization step where a value sits on a rounding boundary: its outputs pass within
    its :func:`rounding_envelope`. The user's model is never modified (a CUDA model is copied to the
    CPU). Warnings from tracing the model are summarised once (:mod:`autocompress.quiet`).
    """
    path = Path(path)
    tensors, keywords = split_example(example_input)
    inputs = tuple(x.detach().cpu() for x in tensors)
    cpu_model = model if _on_cpu(model) else copy.deepcopy(model).cpu()
    if any(isinstance(m, QuantWrapper) for m in cpu_model.modules()):
        cpu_model = freeze_weights(cpu_model)  # quantized weights become constants in the graph
    cpu_model = bind(cpu_model, keywords, output)
    modes = [(m, m.training) for m in cpu_model.modules()]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        cpu_model.eval()
        with torch.no_grad():
            n_outputs = len(flatten_tensors(cpu_model(*inputs), strict=True))
        names_in = list(keywords) if keywords else input_names(len(inputs))
        names_out = _output_names(n_outputs)
        dynamic_axes = (
            {name: {0: "batch"} for name in names_in + names_out} if dynamic_batch else None
        )
        with collected_warnings("exporting the model to ONNX"), warnings.catch_warnings():
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
