"""Deploy a policy with dynamic activations as one ONNX file with int8 layers where it says so.

Transformers run best on CPU with ONNX Runtime's *dynamic* int8 quantization: weights are
int8 (per output channel here), each MatMul's input is quantized on the fly to uint8 from
its own min/max (``DynamicQuantizeLinear``) and the product runs in ``MatMulInteger``. A
policy made in a search space with ``activations="dynamic"`` describes exactly that: a
layer at ``weight_bits == act_bits == 8`` runs in int8, a layer at 32 stays fp32, and the
PyTorch model :func:`~autocompress.apply.apply_policy` builds fake-quantizes the
same way (per-channel symmetric weights, per-call input range), so the file's outputs can
be checked against it.

:func:`export_dynamic_int8` exports the *float twin* of the compressed model (pruned and
factorized, quantization wrappers removed: ONNX Runtime quantizes the float weights
itself), then quantizes only the MatMul nodes of the policy's 8-bit layers with
``onnxruntime.quantization.quantize_dynamic`` (``nodes_to_quantize``). Full-range 8-bit
weights: measured on all-MiniLM-L6-v2 (``benchmarks/minilm.py``), per-channel weights kept
the embeddings' cosine at 0.99 where ORT's default per-tensor weights gave 0.96, and
``reduce_range`` (7-bit weights) was 2-3x slower on this AVX2 CPU.

The PyTorch model emulates the arithmetic, not ONNX Runtime's kernels: on all-MiniLM-L6-v2
the deployed file's embeddings and PyTorch's agree to a cosine of 0.988 at worst (0.999+ on
small random BERTs). The cause is not pinned down (candidates: the 16-bit pair accumulation of
u8·s8 kernels on AVX2 CPUs without VNNI, which ``reduce_range`` exists to avoid; the weight
scale ORT picks, max|w|/127.5 against our max|w|/127). So the check's default threshold is a
cosine of 0.98, and the figures that matter are measured on the file itself.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from torch import nn

from autocompress.calls import Example, OutputSelector, bind, split_example
from autocompress.export.fp32 import ExportMismatchError, export_onnx, onnx_session, run_session
from autocompress.export.graph import layer_nodes
from autocompress.export.static import float_twin
from autocompress.files import atomic_write
from autocompress.quiet import summarising
from autocompress.trace import flatten_tensors
from autocompress.transforms.quantize import QuantWrapper

__all__ = ["DynamicExport", "export_dynamic_int8", "float_twin", "int8_layers"]

#: the one precision ONNX Runtime's dynamic quantization runs besides fp32
INT8 = 8
#: ONNX ops of a Linear that dynamic quantization turns into MatMulInteger
DYNAMIC_OPS = ("MatMul",)


def int8_layers(model: nn.Module) -> list[str]:
    """Names of ``model``'s quantized layers, each checked to be deployable as dynamic int8.

    Raises ValueError naming the layer when one is quantized otherwise (other bit-widths,
    weights and inputs at different bits, or static input ranges).
    """
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, QuantWrapper):
            continue
        if (module.weight_bits, module.act_bits) != (INT8, INT8) or not module.act_quant.dynamic:
            raise ValueError(
                f"layer '{name}' is quantized at weight_bits={module.weight_bits}, act_bits={module.act_bits}"
                f"{' with dynamic' if module.act_quant.dynamic else ' with static'} input ranges; ONNX Runtime's "
                "dynamic int8 runs layers at weight_bits = act_bits = 8 with dynamic ranges, or at 32 (fp32)"
            )
        if not isinstance(module.layer, nn.Linear):
            raise ValueError(f"layer '{name}' is a {type(module.layer).__name__}; dynamic int8 deploys Linear layers only")
        names.append(name)
    return names


@dataclass(frozen=True)
class DynamicExport:
    """The deployed file and how its outputs agree with the compressed PyTorch model.

    ``int8_layers``: the layers running in int8; ``min_cosine``: the lowest cosine similarity
    between a sample's ONNX Runtime output and PyTorch's on the check inputs.
    """

    path: Path
    int8_layers: tuple[str, ...]
    max_abs_diff: float
    min_cosine: float
    bytes: int


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(norms, np.finfo(np.float64).tiny)


@summarising("exporting the model to int8 ONNX")
def export_dynamic_int8(
    model: nn.Module,
    path: str | Path,
    example_input: Example,
    *,
    check_inputs: Example | None = None,
    min_cosine: float | None = 0.98,
    output: OutputSelector = None,
) -> DynamicExport:
    """Write ``model`` (a compressed model with dynamic activations) to ONNX at ``path``.

    Layers at 8 bits run ONNX Runtime dynamic int8 (per-channel weights), the rest fp32;
    dim 0 (batch) and the last input dim (e.g. sequence length) are dynamic only as far as
    the model's export allows (batch always). With ``min_cosine``, ONNX Runtime's outputs on
    ``check_inputs`` (default: the example) must each have at least that cosine similarity
    to the PyTorch model's, else :class:`ExportMismatchError` and nothing is written. The
    model is not modified. Inputs may be keyword tensors (a dict; ``check_inputs`` with the same keys);
    ``output`` selects the model's output as in :func:`~autocompress.export.export_onnx`.
    """
    path = Path(path)
    layers = int8_layers(model)
    twin = float_twin(model).cpu()
    tensors, names = split_example(example_input)
    inputs = tuple(x.detach().cpu() for x in tensors)
    with tempfile.TemporaryDirectory(prefix="autocompress-dyn8-") as tmp:
        fp32 = export_onnx(twin, Path(tmp) / "fp32.onnx", example_input, output=output)
        graph = onnx.load(str(fp32))
        module_names = [name for name, _ in twin.named_modules()]
        nodes = layer_nodes(graph, DYNAMIC_OPS, module_names)
        exported = layer_nodes(graph, (*DYNAMIC_OPS, "Gemm"), module_names)
        missing = [name for name in layers if name not in nodes and name in exported]
        if missing:
            raise ValueError(f"no ONNX MatMul found for layers {missing} (exported as Gemm?); they cannot run in int8")
        layers = [name for name in layers if name in nodes]  # the others feed no exported output (output=)
        chosen = [node for name in layers for node in nodes[name]]
        candidate = Path(tmp) / "int8.onnx"
        if chosen:
            quantize_dynamic(
                str(fp32), str(candidate), weight_type=QuantType.QInt8, per_channel=True,
                nodes_to_quantize=chosen, op_types_to_quantize=list(DYNAMIC_OPS),
            )
        else:
            candidate = fp32
        checks = tuple(x.detach().cpu() for x in split_example(check_inputs)[0]) if check_inputs is not None else inputs
        with torch.no_grad():
            expected = flatten_tensors(bind(model, names, output).eval()(*checks), strict=True)[0].cpu().numpy()
        got = run_session(onnx_session(candidate), checks)[0]
        cosine = float(_cosines(got, expected).min())
        max_diff = float(np.max(np.abs(got.astype(np.float64) - expected)))
        if min_cosine is not None and not (cosine >= min_cosine or math.isclose(cosine, min_cosine)):
            raise ExportMismatchError(
                f"ONNX Runtime's dynamic int8 outputs differ from the PyTorch model: lowest cosine {cosine:.4f} "
                f"(need {min_cosine}), max abs difference {max_diff:.3g}"
            )
        atomic_write(path, lambda tmp_path: Path(tmp_path).write_bytes(candidate.read_bytes()))
    return DynamicExport(path, tuple(layers), max_diff, cosine, path.stat().st_size)
