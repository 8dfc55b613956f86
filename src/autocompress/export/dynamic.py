"""Deploy a policy with dynamic activations as one ONNX file with int8 layers where it says so.

Transformers run best on CPU with ONNX Runtime's *dynamic* int8 quantization: weights are
int8 (per output channel here), each MatMul's input is quantized on the fly to uint8 from
its own min/max (``DynamicQuantizeLinear``) and the product runs in ``MatMulInteger``. A
policy made in a search space with ``activations="dynamic"`` describes exactly that: a
layer at ``weight_bits == act_bits == 8`` runs in int8, a layer at 32 stays fp32, and the
PyTorch model :func:`~autocompress.apply.apply_policy` builds fake-quantizes the
same way (per-channel symmetric weights, per-call input range), so the file's outputs can
be checked against it.

:func:`dynamic_variant` (behind :func:`autocompress.export.export`'s ``int8="dynamic"`` and
:func:`export_dynamic_int8`) exports the *float twin* of the compressed model (pruned and
factorized, quantization wrappers removed: ONNX Runtime quantizes the float weights
itself), then quantizes only the MatMul nodes of the plan's layers
(:func:`~autocompress.export.plan.plan_int8`: the policy's 8-bit layers; a float model's every
Linear exported as MatMul) with ``onnxruntime.quantization.quantize_dynamic``
(``nodes_to_quantize``). Full-range 8-bit
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
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic
from torch import nn

from autocompress.calls import Example, OutputSelector
from autocompress.export.agreement import OutputAgreement, model_agreement
from autocompress.export.constants import DYNAMIC_OPS
from autocompress.export.errors import ExportMismatchError
from autocompress.export.fp32 import export_onnx
from autocompress.export.plan import Int8Plan, float_twin, plan_int8
from autocompress.files import atomic_write
from autocompress.quiet import summarising

__all__ = ["DynamicExport", "dynamic_int8", "dynamic_variant", "export_dynamic_int8"]


def dynamic_int8(source: str | Path, out_path: str | Path, plan: Int8Plan) -> Path:
    """The dynamic backend: the plan's MatMul nodes of ``source`` in ONNX Runtime dynamic int8 (per-channel
    int8 weights), the rest as it is; ``out_path``."""
    if plan.nodes:
        quantize_dynamic(
            str(source), str(out_path), weight_type=QuantType.QInt8, per_channel=True,
            nodes_to_quantize=plan.nodes, op_types_to_quantize=list(DYNAMIC_OPS),
        )
    else:
        shutil.copyfile(source, out_path)
    return Path(out_path)


def dynamic_variant(
    model: nn.Module,
    out: Path,
    example_input: Example,
    check_inputs: Example | None = None,
    *,
    min_cosine: float | None = 0.98,
    output: OutputSelector = None,
    exclude: Iterable[str] = (),
    own_precision_only: bool = False,
) -> tuple[Int8Plan, OutputAgreement]:
    """Write ``model``'s dynamic int8 file at ``out`` (only once it passes); its plan and its check.

    With ``min_cosine``, ONNX Runtime's outputs on ``check_inputs`` (default: the example) must each
    have at least that cosine similarity to the PyTorch model's, else
    :class:`~autocompress.export.errors.ExportMismatchError`. ``exclude`` and ``own_precision_only``
    as in :func:`~autocompress.export.plan.plan_int8`.
    """
    twin = float_twin(model).cpu()
    with tempfile.TemporaryDirectory(prefix="autocompress-dyn8-") as tmp:
        fp32 = export_onnx(twin, Path(tmp) / "fp32.onnx", example_input, output=output)
        plan = plan_int8(model, "dynamic", onnx.load(str(fp32)), exclude, own_precision_only=own_precision_only)
        candidate = dynamic_int8(fp32, Path(tmp) / "int8.onnx", plan)
        checks = example_input if check_inputs is None else check_inputs
        agreement = model_agreement(model, candidate, checks, output)
        cosine = agreement.min_cosine
        if min_cosine is not None and not (cosine >= min_cosine or math.isclose(cosine, min_cosine)):
            raise ExportMismatchError(
                f"ONNX Runtime's dynamic int8 outputs differ from the PyTorch model: lowest cosine {cosine:.4f} "
                f"(need {min_cosine}), max abs difference {agreement.max_abs_diff:.3g}"
            )
        atomic_write(out, lambda tmp_path: Path(tmp_path).write_bytes(candidate.read_bytes()))
    return plan, agreement


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
    """Write ``model`` (a compressed model with dynamic activations) to ONNX at ``path`` (what
    :func:`autocompress.export.export` does with ``int8="dynamic"``, at a path of your choice).

    Layers at 8 bits run ONNX Runtime dynamic int8 (per-channel weights), the rest fp32;
    dim 0 (batch) and the last input dim (e.g. sequence length) are dynamic only as far as
    the model's export allows (batch always). With ``min_cosine``, ONNX Runtime's outputs on
    ``check_inputs`` (default: the example) must each have at least that cosine similarity
    to the PyTorch model's, else :class:`ExportMismatchError` and nothing is written. The
    model is not modified. Inputs may be keyword tensors (a dict; ``check_inputs`` with the same keys);
    ``output`` selects the model's output as in :func:`~autocompress.export.export_onnx`.
    """
    path = Path(path)
    plan, agreement = dynamic_variant(model, path, example_input, check_inputs, min_cosine=min_cosine, output=output,
                                      own_precision_only=True)
    return DynamicExport(path, plan.layers, agreement.max_abs_diff, agreement.min_cosine, path.stat().st_size)
