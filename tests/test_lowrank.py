"""Exactness, shapes and purity of the low-rank transforms."""

from __future__ import annotations

import copy
import pickle
import random

import pytest
import torch
from torch import nn

from autocompress.transforms.factor_shapes import FactorShape, factor_shapes, rank_from_ratio
from autocompress.transforms.lowrank import (
    LowRank,
    factor_shapes_of,
    factorize,
    factorize_conv,
    factorize_linear,
)
from autocompress.transforms.unsupported import UnsupportedLayerError


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def shape_of(layer: nn.Module) -> FactorShape:
    if isinstance(layer, nn.Linear):
        return FactorShape(
            "Linear",
            layer.in_features,
            layer.out_features,
            (),
            (),
            (),
            (),
            1,
            layer.bias is not None,
        )
    assert isinstance(layer, nn.Conv1d | nn.Conv2d)
    return FactorShape(
        type(layer).__name__,
        layer.in_channels,
        layer.out_channels,
        layer.kernel_size,
        layer.stride,
        layer.padding,
        layer.dilation,
        layer.groups,
        layer.bias is not None,
    )


def effective_weight(lowrank: LowRank) -> torch.Tensor:
    """The (out, in, *k) weight the factor chain computes (stride/padding aside)."""
    layers = list(lowrank)
    weights = [layer.weight.detach().double() for layer in layers]
    if len(layers) == 2:
        first, second = (w.reshape(w.shape[0], w.shape[1]) for w in weights)
        return second @ first
    first, core, last = weights
    first = first.reshape(first.shape[:2])
    last = last.reshape(last.shape[:2])
    return torch.einsum("oa,ab...,bi->oi...", last, core, first)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ------------------------------------------------------------------- rank_from_ratio


@pytest.mark.parametrize(
    ("full", "ratio", "multiple", "expected"),
    [
        (10, 0.3, 1, 3),  # 0.3 * 10 is 3.0000000000000004 in floats: still 3
        (10, 0.31, 1, 4),
        (48, 0.3, 8, 16),  # ceil(14.4) = 15 -> 16
        (48, 0.25, 8, 16),  # 12 -> 16
        (5, 0.01, 1, 1),
        (5, 0.01, 4, 4),
        (10, 0.95, 8, 10),  # 10 -> 16, clamped to 10
        (7, 1.0, 4, 7),
        (7, 3.0, 1, 7),
    ],
)
def test_rank_from_ratio(full: int, ratio: float, multiple: int, expected: int) -> None:
    assert rank_from_ratio(full, ratio, multiple) == expected


@pytest.mark.parametrize(
    ("full", "ratio", "multiple"), [(10, 0.0, 1), (10, -1, 1), (0, 0.5, 1), (10, 0.5, 0)]
)
def test_rank_from_ratio_rejects_bad_input(full: int, ratio: float, multiple: int) -> None:
    with pytest.raises(ValueError):
        rank_from_ratio(full, ratio, multiple)


# ------------------------------------------------------------------------ exactness


def test_full_rank_svd_linear_is_exact() -> None:
    layer = nn.Linear(40, 24)
    lowrank = factorize_linear(layer, 24)
    x = torch.randn(16, 40)
    assert isinstance(lowrank, LowRank) and lowrank.kind == "svd" and lowrank.ranks == (24,)
    assert lowrank.original_type == "Linear"
    assert rel_err(lowrank(x), layer(x)) < 1e-5


def test_full_rank_svd_pointwise_conv_is_exact_with_stride_and_padding() -> None:
    conv = nn.Conv2d(16, 24, 1, stride=2, padding=1)
    lowrank = factorize_conv(conv, 16, 16)
    x = torch.randn(2, 16, 11, 10)
    out = lowrank(x)
    assert out.shape == conv(x).shape == (2, 24, 7, 6)
    assert rel_err(out, conv(x)) < 1e-5
    assert lowrank.kind == "svd" and len(lowrank) == 2


@pytest.mark.parametrize(
    ("conv", "x_shape"),
    [
        (nn.Conv1d(12, 20, 5, stride=2, padding=2), (3, 12, 31)),
        (nn.Conv2d(10, 14, 3, stride=2, padding=1, dilation=2), (2, 10, 13, 12)),
        (nn.Conv2d(8, 6, (3, 1), padding="same", bias=False), (2, 8, 9, 9)),
    ],
)
def test_full_rank_tucker2_is_exact(conv: nn.Module, x_shape: tuple[int, ...]) -> None:
    lowrank = factorize_conv(conv, conv.in_channels, conv.out_channels)
    x = torch.randn(x_shape)
    out = lowrank(x)
    assert out.shape == conv(x).shape
    assert rel_err(out, conv(x)) < 1e-5
    assert lowrank.kind == "tucker2" and lowrank.ranks == (conv.in_channels, conv.out_channels)
    assert [type(m) for m in lowrank] == [type(conv)] * 3


# ---------------------------------------------------------------- truncated ranks


@pytest.mark.parametrize(
    ("layer", "ratio", "multiple", "expected_params"),
    [
        (nn.Linear(64, 48), 0.25, 1, 64 * 12 + 12 * 48 + 48),  # rank 12
        (nn.Linear(64, 48), 0.3, 8, 64 * 16 + 16 * 48 + 48),  # rank 15 -> 16
        (nn.Conv2d(32, 64, 1, bias=False), 0.25, 1, 32 * 8 + 8 * 64),  # rank 8
        (nn.Conv2d(32, 64, 3), 0.5, 1, 32 * 16 + 16 * 32 * 9 + 32 * 64 + 64),  # 16, 32
        (nn.Conv1d(20, 30, 5), 0.2, 1, 20 * 4 + 4 * 6 * 5 + 6 * 30 + 30),  # 4, 6
    ],
)
def test_truncated_parameter_counts(
    layer: nn.Module, ratio: float, multiple: int, expected_params: int
) -> None:
    lowrank = factorize(layer, ratio, multiple)
    assert n_params(lowrank) == expected_params
    assert sum(s.num_params for s in factor_shapes_of(layer, ratio, multiple)) == expected_params


def test_svd_error_decreases_with_rank() -> None:
    layer = nn.Linear(32, 24)
    weight = layer.weight.detach().double()
    errors = [rel_err(effective_weight(factorize_linear(layer, r)), weight) for r in range(1, 25)]
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False))
    assert errors[-1] < 1e-6


def test_tucker2_error_decreases_with_rank() -> None:
    conv = nn.Conv2d(16, 20, 3)
    weight = conv.weight.detach().double()
    ranks = [(2, 2), (4, 5), (8, 10), (12, 15), (16, 20)]
    errors = [rel_err(effective_weight(factorize_conv(conv, *r)), weight) for r in ranks]
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False))
    assert errors[-1] < 1e-6
    x = torch.randn(64, 16, 8, 8)  # output error follows the weight error on many inputs
    out_errors = [rel_err(factorize_conv(conv, *r)(x), conv(x)) for r in ranks]
    assert all(a > b for a, b in zip(out_errors, out_errors[1:], strict=False))


# ------------------------------------------------------------------- factor_shapes


def _random_layer(rng: random.Random) -> nn.Module:
    kind = rng.choice(["Linear", "Conv1d", "Conv2d", "Conv2d-1x1"])
    n_in, n_out, bias = rng.randint(1, 40), rng.randint(1, 40), rng.random() < 0.5
    if kind == "Linear":
        return nn.Linear(n_in, n_out, bias=bias)
    if kind == "Conv1d":
        return nn.Conv1d(
            n_in,
            n_out,
            rng.choice([1, 3, 5]),
            stride=rng.randint(1, 3),
            padding=rng.randint(0, 2),
            dilation=rng.randint(1, 2),
            bias=bias,
        )
    kernel = (1, 1) if kind == "Conv2d-1x1" else (rng.choice([1, 3]), rng.choice([3, 5]))
    return nn.Conv2d(
        n_in,
        n_out,
        kernel,
        stride=(rng.randint(1, 2), rng.randint(1, 3)),
        padding=(rng.randint(0, 2), rng.randint(0, 1)),
        dilation=rng.randint(1, 2),
        bias=bias,
    )


def test_factor_shapes_match_built_modules() -> None:
    rng = random.Random(1)
    for _ in range(60):
        layer = _random_layer(rng)
        ratio = rng.choice([0.05, 0.2, 0.33, 0.5, 0.75, 0.99, 1.0])
        multiple = rng.choice([1, 1, 4, 8])
        built = factorize(layer, ratio, multiple)
        actual = [shape_of(m) for m in built] if isinstance(built, LowRank) else [shape_of(built)]
        assert factor_shapes_of(layer, ratio, multiple) == actual, (layer, ratio, multiple)
        assert sum(s.num_params for s in actual) == n_params(built)


def test_factor_shapes_from_plain_dims() -> None:
    shapes = factor_shapes("Conv2d", 32, 64, 0.5, kernel=3, stride=2, padding=1)
    assert [(s.in_features, s.out_features, s.kernel, s.stride) for s in shapes] == [
        (32, 16, (1, 1), (1, 1)),
        (16, 32, (3, 3), (2, 2)),
        (32, 64, (1, 1), (1, 1)),
    ]
    assert [s.has_bias for s in shapes] == [False, False, True]
    assert factor_shapes("Linear", 10, 20, 1.0) == [
        FactorShape("Linear", 10, 20, (), (), (), (), 1, True)
    ]
    with pytest.raises(UnsupportedLayerError):
        factor_shapes("Conv2d", 8, 8, 0.5, kernel=3, groups=8)
    with pytest.raises(UnsupportedLayerError):
        factor_shapes("Conv3d", 8, 8, 0.5, kernel=3)


# --------------------------------------------------------------- purity, gradients


@pytest.mark.parametrize(
    "layer", [nn.Linear(20, 12), nn.Conv2d(8, 12, 3, padding=1), nn.Conv1d(6, 10, 1)]
)
def test_input_layer_is_not_modified(layer: nn.Module) -> None:
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    factorize(layer, 0.5)
    after = layer.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert value.dtype == after[key].dtype
        assert value.numpy().tobytes() == after[key].numpy().tobytes()


def test_gradients_flow_to_every_factor() -> None:
    conv = nn.Conv2d(8, 12, 3, padding=1)
    lowrank = factorize(conv, 0.5)
    lowrank(torch.randn(2, 8, 6, 6)).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lowrank.parameters())
    assert conv.weight.grad is None


def test_ratio_one_returns_the_same_layer() -> None:
    layer = nn.Conv2d(4, 4, 3, groups=4)  # unsupported, but nothing to do at ratio 1
    assert factorize(layer, 1.0) is layer


def test_dtype_mode_and_state_dict_round_trip() -> None:
    layer = nn.Linear(16, 16).double().eval()
    lowrank = factorize(layer, 0.5)
    assert all(p.dtype == torch.float64 for p in lowrank.parameters())
    assert not lowrank.training
    rebuilt = factorize(nn.Linear(16, 16).double(), 0.5)
    rebuilt.load_state_dict(lowrank.state_dict())
    x = torch.randn(3, 16, dtype=torch.float64)
    assert torch.equal(rebuilt(x), lowrank(x))
    clone = copy.deepcopy(lowrank)
    assert (clone.kind, clone.ranks, clone.original_type) == ("svd", (8,), "Linear")
    head = lowrank[:1]
    assert type(head) is nn.Sequential and head[0] is lowrank[0]


# ----------------------------------------------------------------------- unsupported


class _ScaledConv(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(x)


@pytest.mark.parametrize(
    "layer",
    [
        nn.Conv2d(8, 8, 3, groups=8),
        nn.Conv2d(8, 16, 3, groups=2),
        nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"),
        nn.ReLU(),
        nn.Conv3d(4, 4, 3),
        _ScaledConv(4, 4, 3),
    ],
)
def test_unsupported_layers_raise(layer: nn.Module) -> None:
    with pytest.raises(UnsupportedLayerError) as info:
        factorize(layer, 0.5, name="features.3")
    assert isinstance(info.value, ValueError)
    assert info.value.layer == "features.3" and info.value.reason
    assert "features.3" in str(info.value)


def test_unsupported_layer_error_pickles() -> None:
    err = pickle.loads(pickle.dumps(UnsupportedLayerError("conv1", "depthwise")))
    assert (err.layer, err.reason, str(err)) == ("conv1", "depthwise", "conv1: depthwise")


def test_rank_out_of_range_is_rejected() -> None:
    with pytest.raises(ValueError, match="rank"):
        factorize_linear(nn.Linear(8, 4), 5)
    with pytest.raises(ValueError, match="rank_in"):
        factorize_conv(nn.Conv2d(8, 4, 3), 9, 4)
