"""Fake quantization: exactness of the quantizers, QAT, calibration and ONNX agreement."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autocompress.transforms.lowrank import LowRank, factorize
from autocompress.transforms.quantize import (
    ActivationQuantizer,
    QuantWrapper,
    calibrate_activations,
    fake_quantize_weight,
    quantize_layer,
)
from autocompress.transforms.unsupported import UnsupportedLayerError


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def rel_err(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    a, b = torch.as_tensor(a).detach(), torch.as_tensor(b).detach()
    return float((a - b).norm() / b.norm())


# ------------------------------------------------------------------------- weights


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_weight_fake_quant_error_and_levels(bits: int) -> None:
    w = torch.randn(16, 8, 3, 3) * torch.rand(16, 1, 1, 1)
    w[3] = 0.0  # an all-zero channel must stay zero, without NaN
    q = fake_quantize_weight(w, bits)
    qmax = 2 ** (bits - 1) - 1
    scale = w.abs().amax(dim=(1, 2, 3), keepdim=True) / qmax
    assert torch.isfinite(q).all() and torch.equal(q[3], torch.zeros_like(q[3]))
    nonzero = scale.flatten() > 0
    assert ((q - w).abs() <= scale / 2 * (1 + 1e-6))[nonzero].all()
    for channel in range(16):
        assert q[channel].unique().numel() <= 2**bits - 1
    integers = (q / torch.where(scale > 0, scale, 1))[nonzero]
    assert torch.allclose(integers, integers.round(), atol=1e-4)
    assert q.abs().amax(dim=(1, 2, 3)).allclose(w.abs().amax(dim=(1, 2, 3)))  # max is a level


def test_weight_fake_quant_32_bits_is_identity_and_bits_are_checked() -> None:
    w = torch.randn(4, 3)
    assert fake_quantize_weight(w, 32) is w
    for bad in (1, 9, 16, 0, 8.5, True, "8"):
        with pytest.raises(ValueError, match="must be one of"):
            fake_quantize_weight(w, bad)  # type: ignore[arg-type]


def test_weight_ste_gradient_is_identity() -> None:
    w = torch.randn(6, 5, requires_grad=True)
    upstream = torch.randn(6, 5)
    (fake_quantize_weight(w, 4) * upstream).sum().backward()
    assert torch.equal(w.grad, upstream)
    with torch.no_grad():  # forward value is exactly the quantized weight either way
        assert torch.equal(fake_quantize_weight(w, 4), fake_quantize_weight(w.detach(), 4))


# --------------------------------------------------------------------- activations


def test_activation_quantizer_initialises_from_first_batch_in_eval() -> None:
    quant = ActivationQuantizer(8).eval()
    assert not quant.initialized
    x = torch.rand(4, 10) * 3 - 1  # range about [-1, 2]
    out = quant(x)
    assert quant.initialized
    assert quant.min_val == x.min() and quant.max_val == x.max()
    scale, zero_point = quant.scale_zero_point()
    assert torch.isclose(scale, (x.max() - x.min()) / 255)
    assert (out - x).abs().max() <= scale / 2 * (1 + 1e-5)
    assert out.unique().numel() <= 256
    quant(x * 10)  # eval, initialized: range fixed
    assert quant.min_val == x.min() and quant.max_val == x.max()


def test_activation_quantizer_ema_in_train_mode() -> None:
    quant = ActivationQuantizer(4).train()
    first, second = torch.rand(100) * 2 - 1, torch.rand(100) * 6 - 2
    quant(first)
    assert quant.min_val == first.min() and quant.max_val == first.max()
    quant(second)
    expected_min = 0.9 * first.min() + 0.1 * second.min()
    expected_max = 0.9 * first.max() + 0.1 * second.max()
    assert torch.isclose(quant.min_val, expected_min) and torch.isclose(quant.max_val, expected_max)


def test_activation_range_includes_zero_and_state_round_trips() -> None:
    quant = ActivationQuantizer(8).eval()
    x = torch.rand(50) + 2.0  # strictly positive: the range used is [0, max]
    out = quant(x)
    scale, zero_point = quant.scale_zero_point()
    assert zero_point == 0 and torch.isclose(scale, x.max() / 255)
    assert quant(torch.zeros(3)).eq(0).all()  # 0 is exactly representable
    other = ActivationQuantizer(8)
    other.load_state_dict(quant.state_dict())
    assert other.initialized and torch.equal(other.eval()(x), out)
    zeros = ActivationQuantizer(8)
    assert torch.equal(zeros(torch.zeros(5)), torch.zeros(5))  # empty range: no NaN
    quant.load_state_dict(ActivationQuantizer(8).state_dict())  # back to uncalibrated
    quant(x * 2)  # eval, uninitialized: the next batch sets the range again
    assert quant.max_val == (x * 2).max()


def test_activation_quantizer_32_bits_and_ste() -> None:
    x = torch.randn(10)
    quant32 = ActivationQuantizer(32)
    assert quant32(x) is x and not quant32.initialized
    quant = ActivationQuantizer(8).eval()
    quant(torch.linspace(-1, 1, 11))  # range [-1, 1]
    x = torch.tensor([-2.0, -0.5, 0.0, 0.3, 0.99, 3.0], requires_grad=True)
    quant(x).sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.0, 1, 1, 1, 1, 0]))  # clipped outside the range


# ---------------------------------------------------------------------- QuantWrapper

LAYERS = [
    (nn.Conv1d(6, 8, 3, stride=2, padding=1, dilation=2), (4, 6, 20)),
    (nn.Conv2d(8, 12, 3, stride=(2, 1), padding=1, groups=4), (2, 8, 9, 9)),
    (nn.Conv2d(8, 12, 1, bias=False), (2, 8, 5, 5)),
    (nn.Linear(20, 7), (5, 3, 20)),
]


@pytest.mark.parametrize(("layer", "x_shape"), LAYERS)
def test_wrapper_at_32_bits_is_exact(layer: nn.Module, x_shape: tuple[int, ...]) -> None:
    wrapper = QuantWrapper(layer, 32, 32)
    x = torch.randn(x_shape)
    assert torch.equal(wrapper(x), layer(x))


@pytest.mark.parametrize(("layer", "x_shape"), LAYERS)
def test_wrapper_at_8_bits_is_close(layer: nn.Module, x_shape: tuple[int, ...]) -> None:
    wrapper = quantize_layer(layer, 8, 8)
    x = torch.randn(x_shape)
    calibrate_activations(wrapper, [x])
    # per-channel 8-bit weights + per-tensor 8-bit input: about 1% on Gaussian data
    assert rel_err(wrapper(x), layer(x)) < 0.02


def test_wrapper_repr_and_validation() -> None:
    wrapper = QuantWrapper(nn.Linear(3, 3), 4, 8)
    assert "weight_bits=4, act_bits=8" in repr(wrapper)
    assert "bits=8" in repr(wrapper.act_quant)
    with pytest.raises(ValueError, match=r"weight_bits must be one of \[2, 3, 4, 5, 6, 7, 8, 32\]"):
        QuantWrapper(nn.Linear(3, 3), 1, 8)
    with pytest.raises(ValueError, match="act_bits"):
        QuantWrapper(nn.Linear(3, 3), 8, 12)
    for bad in (
        nn.ReLU(),
        nn.Conv2d(3, 3, 3, padding=1, padding_mode="circular"),
        nn.Conv3d(2, 2, 1),
    ):
        with pytest.raises(UnsupportedLayerError):
            quantize_layer(bad, 8, 8)


def test_wrapper_gradients_reach_weights_and_input() -> None:
    wrapper = QuantWrapper(nn.Conv2d(3, 4, 3), 4, 4)
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    wrapper(x).square().sum().backward()
    assert wrapper.layer.weight.grad.abs().sum() > 0 and wrapper.layer.bias.grad is not None
    assert x.grad.abs().sum() > 0


# -------------------------------------------------------------------- quantize_layer


def test_quantize_layer_is_pure() -> None:
    conv = nn.Conv2d(4, 6, 3)
    before = {k: v.clone() for k, v in conv.state_dict().items()}
    wrapped = quantize_layer(conv, 4, 8)
    assert isinstance(wrapped, QuantWrapper) and wrapped.layer is not conv
    wrapped(torch.randn(1, 4, 5, 5)).sum().backward()
    for key, value in conv.state_dict().items():
        assert value.numpy().tobytes() == before[key].numpy().tobytes()
    assert conv.weight.grad is None
    assert quantize_layer(conv, 32, 32) is conv


def test_quantize_layer_wraps_each_lowrank_factor() -> None:
    conv = nn.Conv2d(8, 8, 3, padding=1)
    lowrank = factorize(conv, 0.5)
    assert isinstance(lowrank, LowRank)
    quantized = quantize_layer(lowrank, 4, 8)
    assert isinstance(quantized, LowRank) and quantized is not lowrank
    assert (quantized.kind, quantized.ranks, quantized.original_type) == (
        lowrank.kind,
        lowrank.ranks,
        lowrank.original_type,
    )
    assert all(isinstance(child, QuantWrapper) for child in quantized)
    assert not any(isinstance(child, QuantWrapper) for child in lowrank)
    assert "0.layer.weight" in quantized.state_dict()
    x = torch.randn(2, 8, 6, 6)
    assert quantized(x).shape == conv(x).shape


def test_quantize_layer_requantizes_a_wrapper() -> None:
    wrapper = quantize_layer(nn.Linear(4, 4), 8, 8)
    again = quantize_layer(wrapper, 4, 6)
    assert isinstance(again, QuantWrapper) and isinstance(again.layer, nn.Linear)
    assert (again.weight_bits, again.act_bits) == (4, 6)
    assert torch.equal(again.layer.weight, wrapper.layer.weight)


# ------------------------------------------------------------------------------- QAT


def test_qat_reduces_loss_with_4_bit_weights() -> None:
    x = torch.randn(256, 8)
    y = x @ torch.randn(8, 1) + 0.5 * torch.sin(x[:, :1] * 2)
    model = nn.Sequential(
        quantize_layer(nn.Linear(8, 32), 4, 8), nn.ReLU(), quantize_layer(nn.Linear(32, 1), 4, 8)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


# ----------------------------------------------------------------------- calibration


def test_calibrate_gives_exact_global_min_max() -> None:
    model = nn.Sequential(
        quantize_layer(nn.Conv2d(3, 4, 3), 4, 8),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        quantize_layer(nn.Conv2d(4, 2, 1), 8, 6),
        quantize_layer(nn.Conv2d(2, 2, 1), 32, 32),  # identity quantizers are not counted
    ).train()
    model[1].eval()
    model[0].act_quant(torch.full((1,), 100.0))  # stale range, must be reset
    batches = [torch.randn(2, 3, 6, 6) * (i + 1) for i in range(4)]
    bn_mean = model[1].running_mean.clone()

    assert calibrate_activations(model, batches) == 2

    stacked = torch.cat(batches)
    assert model[0].act_quant.min_val == stacked.min()
    assert model[0].act_quant.max_val == stacked.max()
    with torch.no_grad():  # float activations, fake-quantized weights
        first = model[0].layer
        hidden = F.conv2d(stacked, fake_quantize_weight(first.weight, 4), first.bias)
        hidden = model[2](model[1](hidden))
    assert torch.isclose(model[3].act_quant.min_val, hidden.min(), atol=1e-6)
    assert torch.isclose(model[3].act_quant.max_val, hidden.max(), atol=1e-6)
    assert torch.equal(model[1].running_mean, bn_mean)
    assert model.training and model[0].training and not model[1].training
    assert not any(m.calibrating for m in model.modules() if isinstance(m, ActivationQuantizer))


def test_calibrate_edge_cases() -> None:
    assert calibrate_activations(nn.Linear(3, 3), [torch.randn(2, 3)]) == 0
    model = quantize_layer(nn.Linear(3, 3), 8, 8)
    with pytest.raises(ValueError, match="no batches"):
        calibrate_activations(model, [])
    pairs = [(torch.randn(4, 3), torch.zeros(4)) for _ in range(2)]  # DataLoader-style
    assert calibrate_activations(model, pairs, device="cpu") == 1
    assert model.act_quant.max_val == torch.cat([x for x, _ in pairs]).max()


# ------------------------------------------------------------------------------ ONNX


def run_onnx(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x,),
            buffer,
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}},
        )
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x.numpy()})[0]


def small_model() -> nn.Sequential:
    return nn.Sequential(
        quantize_layer(nn.Conv2d(3, 8, 3, padding=1), 4, 8),
        nn.ReLU(),
        quantize_layer(nn.Conv2d(8, 8, 3, stride=2), 4, 8),
        nn.ReLU(),
        nn.Flatten(),
        quantize_layer(nn.Linear(8 * 3 * 3, 10), 4, 8),
    )


def test_onnx_export_matches_bit_for_bit_on_exact_arithmetic() -> None:
    """Dyadic weights and ranges make every conv sum exact, so float accumulation order
    cannot flip a rounding: PyTorch and ONNX Runtime must then agree bit for bit, ties
    (x / scale = k + 0.5, round half to even in both) included."""
    model = small_model().eval()
    for module in model.modules():
        if isinstance(module, QuantWrapper):
            weight = module.layer.weight
            with torch.no_grad():
                weight.copy_(torch.randint(-7, 8, weight.shape) / 64)
                weight.view(weight.shape[0], -1)[:, 0] = 7 / 64  # scale exactly 1/64
                module.layer.bias.copy_(torch.randint(-8, 9, module.layer.bias.shape) / 256)
            module.act_quant.min_val.fill_(-128 / 32)  # scale 1/32, zero point 128
            module.act_quant.max_val.fill_(127 / 32)
            module.act_quant.initialized.fill_(True)
    x = torch.randint(-160, 160, (4, 3, 8, 8)) / 32 + 0.5 / 32  # all ties, some clipped
    expected = model(x).detach().numpy()
    actual = run_onnx(model, x)
    assert np.array_equal(actual, expected)
    assert rel_err(actual, expected) < 1e-4


def test_onnx_export_matches_pytorch_after_calibration() -> None:
    wrapper = quantize_layer(nn.Conv2d(3, 8, 3, padding=1), 4, 8)
    calibrate_activations(wrapper, [torch.randn(8, 3, 10, 10)])
    wrapper.eval()
    x = torch.randn(5, 3, 10, 10)
    assert rel_err(run_onnx(wrapper, x), wrapper(x)) < 1e-4  # measured ~1e-7


def test_onnx_export_of_uncalibrated_quantizer_fails_clearly() -> None:
    with pytest.raises(RuntimeError, match="calibrate_activations"):
        run_onnx(quantize_layer(nn.Linear(4, 2), 8, 8).eval(), torch.randn(1, 4))


def test_freeze_weights_keeps_outputs_and_drops_runtime_weight_quantization(tmp_path) -> None:
    import onnx

    from autocompress.export import export_onnx
    from autocompress.transforms.quantize import freeze_weights

    torch.manual_seed(0)
    model = nn.Sequential(QuantWrapper(nn.Linear(8, 4), 4, 8)).eval()
    x = torch.randn(5, 8)
    with torch.no_grad():
        expected = model(x)  # also initialises the activation range
        frozen = freeze_weights(model)
        assert torch.equal(frozen(x), expected)
    assert frozen[0].weight_frozen and not model[0].weight_frozen  # the input is not changed
    assert len(torch.unique(frozen[0].layer.weight[0])) <= 2**4 - 1
    export_onnx(model, tmp_path / "m.onnx", x)
    ops = [node.op_type for node in onnx.load(tmp_path / "m.onnx").graph.node]
    assert "ReduceMax" not in ops and "Abs" not in ops  # no weight scale computed at run time
    assert "Round" in ops  # the activation quantizer remains
