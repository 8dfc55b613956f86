"""ONNX graph surgery before quantization (Gemm+BatchNorm folding, unused initializers) and the node naming that maps PyTorch modules to ONNX nodes."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization.shape_inference import quant_pre_process

from autocompress.export.constants import QUANTIZED_OPS
from autocompress.files import atomic_write


def _attribute(node: onnx.NodeProto, name: str, default: float | int) -> float | int:
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def remove_unused_initializers(graph: onnx.GraphProto) -> None:
    used = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)


def _fold_gemm_batchnorm(model: onnx.ModelProto) -> int:
    """Fold each inference BatchNormalization that alone consumes a Gemm's output into it.

    ``y = gamma * (x W^T + b - mean) / sqrt(var + eps) + beta`` becomes one Gemm with
    ``W' = s W`` (rows scaled), ``b' = s (b - mean) + beta``, ``s = gamma / sqrt(var + eps)``.
    Only Gemms with constant weight (and bias) and ``transA = 0`` are folded; the Gemm keeps
    its name. Returns the number of folded pairs.
    """
    graph = model.graph
    constants = {init.name: init for init in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in graph.output}
    producers = {out: node for node in graph.node for out in node.output}
    removed: list[onnx.NodeProto] = []
    for norm in list(graph.node):
        if norm.op_type != "BatchNormalization" or len(norm.output) != 1:
            continue
        gemm = producers.get(norm.input[0])
        if gemm is None or gemm.op_type != "Gemm" or gemm.output[0] in graph_outputs:
            continue
        if len(consumers.get(gemm.output[0], [])) != 1 or int(_attribute(gemm, "transA", 0)):
            continue
        if not all(name in constants for name in [*gemm.input[1:], *norm.input[1:]]):
            continue
        gamma, beta, mean, var = (numpy_helper.to_array(constants[n]) for n in norm.input[1:5])
        scale = gamma / np.sqrt(var + float(_attribute(norm, "epsilon", 1e-5)))
        weight = numpy_helper.to_array(constants[gemm.input[1]]).astype(np.float64)
        alpha, beta_gemm = (
            float(_attribute(gemm, "alpha", 1.0)),
            float(_attribute(gemm, "beta", 1.0)),
        )
        trans_b = int(_attribute(gemm, "transB", 0))
        out_features = weight.shape[0] if trans_b else weight.shape[1]
        bias = np.zeros(out_features)
        if len(gemm.input) > 2 and gemm.input[2]:
            bias = np.broadcast_to(numpy_helper.to_array(constants[gemm.input[2]]), (out_features,))
        weight = alpha * (weight * scale[:, None] if trans_b else weight * scale[None, :])
        bias = scale * (beta_gemm * bias - mean) + beta
        dtype = numpy_helper.to_array(constants[gemm.input[1]]).dtype
        weight_name, bias_name = f"{gemm.name}.folded_weight", f"{gemm.name}.folded_bias"
        graph.initializer.append(numpy_helper.from_array(weight.astype(dtype), weight_name))
        graph.initializer.append(numpy_helper.from_array(bias.astype(dtype), bias_name))
        del gemm.input[1:]
        gemm.input.extend([weight_name, bias_name])
        for attr in list(gemm.attribute):
            if attr.name in ("alpha", "beta"):
                gemm.attribute.remove(attr)
        gemm.output[0] = norm.output[0]
        removed.append(norm)
    for norm in removed:
        graph.node.remove(norm)
    if removed:
        remove_unused_initializers(graph)
    return len(removed)


@contextlib.contextmanager
def working_directory(path: str | Path) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def prepare_for_quantization(fp32_path: str | Path, out_path: str | Path) -> Path:
    """Write the fp32 model as quantization wants it; return ``out_path``.

    Runs ``quant_pre_process`` (symbolic and ONNX shape inference, ONNX Runtime's basic
    fusions) and folds Gemm+BatchNormalization pairs. The result is still fp32 and gives
    the same outputs (to float rounding).
    """
    fp32_path = existing_file(fp32_path)
    with tempfile.TemporaryDirectory(prefix="autocompress-int8-") as tmp:
        processed = Path(tmp) / "processed.onnx"
        with working_directory(tmp):  # a failing symbolic shape inference dumps its graph in the cwd
            try:
                quant_pre_process(str(fp32_path.resolve()), str(processed))
            except Exception:  # noqa: BLE001 - symbolic shape inference gives up on some graphs (MobileViT)
                quant_pre_process(str(fp32_path.resolve()), str(processed), skip_symbolic_shape=True)
        model = onnx.load(str(processed))
    _fold_gemm_batchnorm(model)
    onnx.checker.check_model(model)
    return atomic_write(out_path, lambda tmp_path: onnx.save(model, tmp_path))


# ---------------------------------------------------------------- layer names -> nodes


def _module_path(scopes: Sequence[str], modules: set[str] | None = None) -> list[str]:
    """Qualified module names of a node's scope list (outermost first).

    The exporter names each scope by the module's qualified name from its last
    non-numeric part on (``blocks.0.shortcut.0`` -> ``shortcut.0``), so a module's name
    is its parent's name plus the scope's last part. A container without a forward (a
    ModuleList) gets no scope of its own: ``encoder.layer.0`` is scope ``layer.0`` under
    ``encoder``; given the model's ``modules`` names, the whole scope is used where it names one.
    """
    names: list[str] = []
    for scope in scopes:
        if not names:
            names.append(scope)
        elif modules is not None and f"{names[-1]}.{scope}" in modules:
            names.append(f"{names[-1]}.{scope}")
        else:
            names.append(f"{names[-1]}.{scope.split('.')[-1]}")
    return names


def layer_nodes(
    model: onnx.ModelProto, ops: Iterable[str] = QUANTIZED_OPS, modules: Iterable[str] | None = None
) -> dict[str, list[str]]:
    """Map every PyTorch module name (and each of its parents) to its ONNX nodes of ``ops``.

    Node names follow the TorchScript exporter's ``/scope/scope/.../OpType[_n]`` scheme;
    nodes whose names don't are left out. ``modules``: the PyTorch model's module names
    (resolves scopes of ModuleList children).
    """
    known = set(modules) if modules is not None else None
    wanted = set(ops)
    mapping: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.op_type not in wanted or not node.name.startswith("/"):
            continue
        scopes = node.name.split("/")[1:-1]
        for module in _module_path(scopes, known):
            mapping.setdefault(module, []).append(node.name)
    return mapping


def excluded_nodes(model: onnx.ModelProto, exclude: Iterable[str]) -> list[str]:
    """ONNX node names for ``exclude`` (module names, or node names of quantized ops)."""
    exclude = [exclude] if isinstance(exclude, str) else list(exclude)
    if not exclude:
        return []
    mapping = layer_nodes(model)
    node_names = {n.name for n in model.graph.node if n.op_type in QUANTIZED_OPS}
    chosen: list[str] = []
    for name in exclude:
        if name in mapping:
            chosen.extend(mapping[name])
        elif name in node_names:
            chosen.append(name)
        else:
            allowed = ", ".join(sorted(mapping, key=natural_key)) or "(none: no layer names found)"
            raise ValueError(
                f"exclude: unknown layer {name!r}; layers with weights that can be kept in "
                f"fp32: {allowed}"
            )
    return list(dict.fromkeys(chosen))


def natural_key(name: str) -> list[tuple[int, int | str]]:
    return [(0, int(p)) if p.isnumeric() else (1, p) for p in name.split(".")]


# ---------------------------------------------------------------- quantization


def existing_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {str(path)!r} does not exist")
    return path
