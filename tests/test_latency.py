"""Latency measurement: sane, ordered numbers; big models measure slower than tiny ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from autocompress.export import LatencyResult, compare_latency, export_onnx, measure_ort_latency
from autocompress.hardware.latency import measure_torch_latency


def tiny() -> nn.Module:
    return nn.Linear(64, 4)


def big() -> nn.Module:  # ~17,000x the MACs of tiny(); measures ~100x slower
    return nn.Sequential(
        nn.Linear(64, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 4)
    )


def assert_sane(result: LatencyResult, repeats: int) -> None:
    assert 0 < result.p10_ms <= result.median_ms <= result.p90_ms
    assert result.repeats == repeats


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("latency")
    x = torch.randn(8, 64)
    torch.manual_seed(0)
    return {
        "tiny": export_onnx(tiny(), folder / "tiny.onnx", x, check=False),
        "big": export_onnx(big(), folder / "big.onnx", x, check=False),
    }


def test_measure_ort_latency(onnx_files: dict[str, Path]) -> None:
    result = measure_ort_latency(
        onnx_files["tiny"], torch.randn(8, 64), threads=1, warmup=2, repeats=7
    )
    assert_sane(result, 7)
    assert (result.target, result.device, result.threads) == ("onnxruntime", "cpu", 1)
    assert (result.warmup, result.batch_size) == (2, 8)


def test_compare_latency_orders_models(onnx_files: dict[str, Path]) -> None:
    results = compare_latency(
        onnx_files, torch.randn(8, 64), threads=1, warmup=2, repeats=4, rounds=3
    )
    assert list(results) == ["tiny", "big"]
    for result in results.values():
        assert_sane(result, 12)  # rounds * repeats samples
        assert result.threads == 1
    assert results["big"].median_ms > 10 * results["tiny"].median_ms


def test_measure_torch_latency_cpu_restores_threads_and_mode() -> None:
    model = tiny().train()
    threads_before = torch.get_num_threads()
    result = measure_torch_latency(model, torch.randn(2, 64), threads=1, warmup=1, repeats=5)
    assert_sane(result, 5)
    assert (result.target, result.device, result.threads, result.batch_size) == (
        "torch",
        "cpu",
        1,
        2,
    )
    assert torch.get_num_threads() == threads_before
    assert model.training


def test_torch_latency_bigger_is_slower() -> None:
    x = torch.randn(8, 64)
    small = measure_torch_latency(tiny(), x, threads=1, warmup=2, repeats=5)
    large = measure_torch_latency(big(), x, threads=1, warmup=2, repeats=5)
    assert large.median_ms > 5 * small.median_ms


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_measure_torch_latency_cuda() -> None:
    model = tiny()
    result = measure_torch_latency(model, torch.randn(2, 64), device="cuda", warmup=2, repeats=5)
    assert_sane(result, 5)
    assert result.device.startswith("cuda")
    assert next(model.parameters()).device.type == "cpu"  # user's model not moved


def test_bad_counts_are_explained(onnx_files: dict[str, Path]) -> None:
    x = torch.randn(8, 64)
    with pytest.raises(ValueError, match="repeats"):
        measure_ort_latency(onnx_files["tiny"], x, repeats=0)
    with pytest.raises(ValueError, match="rounds"):
        compare_latency(onnx_files, x, rounds=0)
    with pytest.raises(ValueError, match="threads"):
        measure_torch_latency(tiny(), x, threads=0)
