"""Export of fake-quantized models: a rounding flip is not a mismatch; a wrong export still is.

A 4-bit ``transformers`` ResNet (basic blocks, random weights) is the real case: ONNX Runtime's
outputs differ from PyTorch's by far more than 1e-4 (values on a rounding boundary round to the
neighbouring step, and that grows through the network), yet the model is exported correctly.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from third_party import BY_NAME  # noqa: E402

from autocompress.apply import apply_policy  # noqa: E402
from autocompress.calls import bind  # noqa: E402
from autocompress.export import ExportMismatchError, export_onnx, onnx_session, run_session  # noqa: E402
from autocompress.export import fp32 as export  # noqa: E402
from autocompress.policy import Policy  # noqa: E402
from autocompress.space import SearchSpace  # noqa: E402
from autocompress.transforms.quantize import QuantWrapper, freeze_weights  # noqa: E402


@pytest.fixture(scope="module")
def quantized():
    arch = BY_NAME["resnet-basic"]
    model, example = arch.build(), arch.example(8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        space = SearchSpace.from_model(model, example, output="logits")
    small = apply_policy(model, Policy.uniform(space, weight_bits=4, act_bits=4), example, space=space)
    return small.eval(), example


def test_a_correct_4_bit_model_exports_though_onnx_rounds_differently(quantized, tmp_path) -> None:
    small, example = quantized
    path = export_onnx(small, tmp_path / "q.onnx", example, output="logits")
    got = run_session(onnx_session(path), example)[0]
    with torch.no_grad():
        expected = small(**example).logits.numpy()
    error = np.abs(got - expected)
    assert not np.allclose(got, expected, rtol=1e-4, atol=1e-5)  # the strict check would refuse it
    assert error.max() > 1e-3 and error.max() < 0.1 * np.abs(expected).max()


def _checked_against(path, model, example) -> None:
    inputs = tuple(example.values())
    export._check_file(path, bind(freeze_weights(model), tuple(example), "logits"), inputs, 1e-4, 1e-5, True)


def test_a_wrong_export_still_fails(quantized, tmp_path) -> None:
    small, example = quantized
    path = export_onnx(small, tmp_path / "q.onnx", example, output="logits")
    _checked_against(path, small, example)  # the file against its own model: passes
    layers = [m for m in small.modules() if isinstance(m, QuantWrapper) and m.layer.weight.dim() == 4]

    permuted = copy.deepcopy(small)  # one conv's output channels permuted
    conv = [m for m in permuted.modules() if isinstance(m, QuantWrapper) and m.layer.weight.dim() == 4][2].layer
    with torch.no_grad():
        conv.weight.copy_(conv.weight.roll(1, dims=0))
    with pytest.raises(ExportMismatchError, match="rounding envelope"):
        _checked_against(path, permuted, example)

    dropped = copy.deepcopy(small)  # one residual branch's last conv gives nothing
    conv = [m for m in dropped.modules() if isinstance(m, QuantWrapper) and m.layer.weight.dim() == 4][-1].layer
    with torch.no_grad():
        conv.weight.zero_()
    with pytest.raises(ExportMismatchError, match="rounding envelope"):
        _checked_against(path, dropped, example)
    assert len(layers) >= 4
