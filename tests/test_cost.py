"""Counted costs against hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from rich.table import Table
from torch import nn

from autocompress.cost import CostReport, LayerCost, count_cost, is_quant_wrapper


class StandInQuant(nn.Module):
    """Minimal stand-in for transforms.quantize.QuantWrapper (duck-typed)."""

    def __init__(self, layer: nn.Module, weight_bits: int, act_bits: int, functional: bool = False):
        super().__init__()
        self.layer = layer
        self.weight_bits = weight_bits
        self.act_bits = act_bits
        self.functional = functional

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.functional:  # bypasses self.layer's forward, like a fake-quant implementation
            return F.conv2d(x, self.layer.weight, self.layer.bias)
        return self.layer(x)


def only(report: CostReport, name: str) -> LayerCost:
    return report.layer(name)


def test_conv1d_stride_padding_dilation() -> None:
    conv = nn.Conv1d(3, 8, kernel_size=5, stride=2, padding=1, dilation=2)
    report = count_cost(conv, torch.randn(2, 3, 20))
    # L_out = floor((20 + 2*1 - 2*(5-1) - 1) / 2 + 1) = 7
    row = only(report, "")
    assert row.type == "Conv1d"
    assert row.macs == 8 * 7 * 3 * 5 == 840
    assert row.flops == 1680
    assert row.params == 8 * 3 * 5 + 8 == 128
    assert row.bytes == 128 * 4
    assert row.bitops == 840 * 32 * 32
    assert (row.weight_bits, row.act_bits) == (32, 32)


def test_conv2d_grouped_and_depthwise() -> None:
    model = nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1, groups=2, bias=False),  # out 8x6x6
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8),  # depthwise, out 8x3x3
    )
    report = count_cost(model, torch.randn(3, 4, 6, 6))
    assert [r.name for r in report.layers] == ["0", "2"]
    grouped, depthwise = report.layers
    assert grouped.macs == 8 * 6 * 6 * (4 // 2) * 9 == 5184
    assert grouped.params == 8 * 2 * 9 == 144
    assert depthwise.macs == 8 * 3 * 3 * 1 * 9 == 648
    assert depthwise.params == 8 * 9 + 8 == 80
    assert report.macs == 5184 + 648
    assert report.params == 224


def test_linear_on_2d_and_3d_inputs() -> None:
    flat = count_cost(nn.Linear(10, 4), torch.randn(5, 10))
    assert flat.macs == 40
    assert flat.params == 44
    tokens = count_cost(nn.Linear(10, 4), torch.randn(2, 7, 10))
    assert tokens.macs == 7 * 4 * 10 == 280
    assert tokens.params == 44


def test_norm_and_embedding_rows_have_params_but_no_macs() -> None:
    model = nn.Sequential(
        nn.Embedding(50, 6),  # 300 params
        nn.LayerNorm(6),  # 12 params
        nn.Linear(6, 8),  # 7 tokens * 8 * 6 MACs
    )
    report = count_cost(model, torch.randint(0, 50, (2, 7)))
    assert [(r.name, r.type, r.macs, r.params) for r in report.layers] == [
        ("0", "Embedding", 0, 300),
        ("1", "LayerNorm", 0, 12),
        ("2", "Linear", 336, 56),
    ]


def test_batchnorm_counts_params_not_buffers() -> None:
    model = nn.Sequential(nn.Conv1d(2, 8, 3, bias=False), nn.BatchNorm1d(8), nn.ReLU())
    report = count_cost(model, torch.randn(4, 2, 10))
    bn = only(report, "1")
    assert (bn.type, bn.macs, bn.params, bn.bytes, bn.bitops) == ("BatchNorm1d", 0, 16, 64.0, 0)
    assert only(report, "0").macs == 8 * 8 * 2 * 3
    assert len(report.layers) == 2  # ReLU owns nothing


@pytest.mark.parametrize("functional", [False, True])
def test_quant_wrapper_is_one_row_with_bits(functional: bool) -> None:
    model = nn.Sequential(
        StandInQuant(nn.Conv2d(3, 4, 3), weight_bits=4, act_bits=8, functional=functional),
        nn.Flatten(),
        nn.Linear(36, 2),
    )
    assert is_quant_wrapper(model[0]) and not is_quant_wrapper(model[2])
    report = count_cost(model, torch.randn(2, 3, 5, 5))
    assert [r.name for r in report.layers] == ["0", "2"]
    row = only(report, "0")
    assert row.type == "Conv2d"
    assert (row.weight_bits, row.act_bits) == (4, 8)
    assert row.macs == 4 * 3 * 3 * 3 * 9 == 972  # counted once, not twice
    assert row.params == 4 * 27 + 4 == 112
    assert row.bytes == 108 * 4 / 8 + 4 * 4 == 70.0  # 4-bit weight, fp32 bias
    assert row.bitops == 972 * 4 * 8
    linear = only(report, "2")
    assert linear.bitops == 72 * 32 * 32
    assert report.bitops == 972 * 32 + 72 * 1024
    assert report.bytes == 70.0 + 74 * 4


def test_lowrank_like_sequential_children_are_rows() -> None:
    model = nn.Sequential(nn.Sequential(nn.Linear(10, 3, bias=False), nn.Linear(3, 4)))
    report = count_cost(model, torch.randn(1, 10))
    assert [(r.name, r.macs, r.params) for r in report.layers] == [("0.0", 30, 30), ("0.1", 12, 16)]


def test_layer_called_twice_counts_twice() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.fc(x))

    report = count_cost(Twice(), torch.randn(3, 4))
    assert report.macs == 2 * 16
    assert report.params == 20


def test_costs_are_per_sample() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.Flatten(), nn.Linear(6 * 16, 5)
    )
    one = count_cost(model, torch.randn(1, 3, 4, 4))
    many = count_cost(model, torch.randn(7, 3, 4, 4))
    assert one == many
    assert one.macs == 6 * 16 * 3 * 9 + 5 * 96


def test_model_untouched_and_modes_restored() -> None:
    model = nn.Sequential(nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4), nn.Dropout(0.5))
    model.train()
    model[1].eval()  # mixed modes must come back exactly
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_cost(model, torch.randn(8, 2, 10))
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [m.training for m in model] == [True, False, True]
    assert model.training
    assert all(not m._forward_hooks for m in model.modules())


def test_totals_ratio_and_table() -> None:
    big = count_cost(nn.Linear(10, 10), torch.randn(1, 10))
    small = count_cost(nn.Linear(10, 5), torch.randn(1, 10))
    assert big.as_dict() == {
        "flops": 200,
        "macs": 100,
        "params": 110,
        "bitops": 102400,
        "bytes": 440.0,
    }
    ratios = small.ratio_to(big)
    assert ratios["macs"] == 0.5
    assert ratios["params"] == 55 / 110
    assert set(ratios) == {"flops", "macs", "params", "bitops", "bytes"}
    empty = CostReport(())
    assert empty.ratio_to(empty)["macs"] == 1.0
    assert math.isinf(big.ratio_to(empty)["macs"])
    table = big.to_table()
    assert isinstance(table, Table)
    assert table.row_count == 2  # one layer + total


def test_bad_input_is_explained() -> None:
    with pytest.raises(ValueError, match="batch"):
        count_cost(nn.Linear(2, 2), torch.tensor(1.0))
    with pytest.raises(KeyError, match="layers"):
        count_cost(nn.Linear(2, 2), torch.randn(1, 2)).layer("nope")
