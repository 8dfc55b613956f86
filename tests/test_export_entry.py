"""export(): one entry point, one report, one error; the int8 plan says exactly which layers the file runs in int8.

Every claim is read back from the written file: its outputs in ONNX Runtime against PyTorch's on
inputs the export never saw, and which Conv/Linear weights its graph stores as int8 initializers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import autocompress as ac
from autocompress.export import (
    ExportError,
    ExportMismatchError,
    Int8AccuracyError,
    export,
    layer_nodes,
    onnx_session,
    run_session,
)
from autocompress.task import Task

LAYERS = ("conv", "proj", "head")


class Net(nn.Module):
    """A Conv1d, a Linear on 3-D inputs (exported as MatMul) and a Linear head on 2-D inputs (a Gemm)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 8, 3, padding=1)
        self.proj = nn.Linear(16, 16)
        self.head = nn.Linear(8 * 16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.proj(torch.relu(self.conv(x))))
        return self.head(h.flatten(1))


@pytest.fixture(scope="module")
def net() -> Net:
    torch.manual_seed(0)
    return Net().eval()


def inputs(count: int, seed: int) -> torch.Tensor:
    return torch.randn(count, 2, 16, generator=torch.Generator().manual_seed(seed))


def outputs(path: Path, model: nn.Module, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(ONNX Runtime's, PyTorch's) outputs on ``x``."""
    (got,) = run_session(onnx_session(path), (x,))
    with torch.no_grad():
        return got, model(x).numpy()


def int8_weight_layers(path: Path) -> set[str]:
    """The layers whose weight the graph stores as an int8 initializer (fed to MatMulInteger, or through a
    DequantizeLinear to the Conv / Gemm / MatMul)."""
    model = onnx.load(str(path))
    int8 = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8}
    dequantized = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in int8}
    int8_nodes = {n.name for n in model.graph.node if len(n.input) > 1 and (n.input[1] in int8 or n.input[1] in dequantized)}
    mapping = layer_nodes(model, ("Conv", "Gemm", "MatMul", "MatMulInteger", "ConvInteger"))
    return {layer for layer in LAYERS if set(mapping.get(layer, ())) & int8_nodes}


def float_weights(path: Path) -> int:
    return sum(i.data_type == onnx.TensorProto.FLOAT and len(i.dims) >= 2 for i in onnx.load(str(path)).graph.initializer)


def test_fp32_file_equals_pytorch(net, tmp_path) -> None:
    report = export(net, tmp_path, example=inputs(8, 0), int8=False)
    assert report.path == tmp_path / "model.onnx" and report.paths == {"fp32": report.path}
    assert report.chosen == "fp32" and report.why == "int8=False" and report.plan is None
    assert report.check.reference == "PyTorch" and report.check.samples == 8
    assert report.check.max_abs_diff < 1e-5 and report.check.min_cosine > 0.999999
    got, expected = outputs(report.path, net, inputs(32, 1))  # a batch size and inputs the export never saw
    assert got.shape == (32, 4)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert int8_weight_layers(report.path) == set()
    assert np.isnan(report.latency_ms)  # not asked


def test_dynamic_int8_runs_exactly_the_planned_linear_in_int8(net, tmp_path) -> None:
    check = inputs(64, 2)
    report = export(net, tmp_path, example=inputs(8, 0), int8="dynamic", check_inputs=check)
    assert report.path == tmp_path / "model.onnx" and report.chosen == "int8-dynamic"
    plan = report.plan
    # only the Linear on 3-D inputs is a MatMul: the Conv and the Gemm head stay fp32
    assert plan.mode == "dynamic" and plan.layers == ("proj",) and plan.int8 == {"proj": ("/proj/MatMul",)}
    assert plan.fp32 == ("conv", "head") and not plan.own_precision
    assert int8_weight_layers(report.path) == {"proj"}
    ops = [n.op_type for n in onnx.load(str(report.path)).graph.node]
    assert ops.count("MatMulInteger") == 1 and "Conv" in ops
    assert float_weights(report.path) == 2  # the conv's and the head's; proj's is int8 only
    assert report.check.reference == "PyTorch" and report.check.samples == 64 and report.check.min_cosine >= 0.98
    got, expected = outputs(report.path, net, inputs(64, 3))
    cosine = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() >= 0.98
    assert np.abs(got - expected).max() <= 0.05 * np.abs(expected).max()


def test_static_int8_runs_exactly_the_planned_layers_in_int8(net, tmp_path) -> None:
    calibration = inputs(128, 4)
    report = export(net, tmp_path, example=inputs(8, 0), int8="static", calibration=calibration)
    assert report.paths == {"fp32": tmp_path / "model.onnx", "int8-static": tmp_path / "model.int8.onnx"}
    assert report.path == tmp_path / "model.int8.onnx" and report.chosen == "int8-static"
    assert report.plan.mode == "static" and report.plan.layers == LAYERS and report.plan.fp32 == ()
    assert int8_weight_layers(report.path) == set(LAYERS)
    assert float_weights(report.path) == 0
    # the static check compares with the fp32 file, on the first 256 (here all 128) calibration samples
    assert report.check.reference == "model.onnx" and report.check.samples == 128
    assert report.check.relative_diff <= 0.25
    got, expected = outputs(report.path, net, inputs(64, 5))
    assert np.abs(got - expected).max() <= 0.25 * np.abs(expected).max()
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.9
    # exclude keeps a layer in fp32, in the plan and in the file
    kept = export(net, tmp_path / "kept", example=inputs(8, 0), int8="static", calibration=calibration, exclude=["head"])
    assert kept.plan.layers == ("conv", "proj") and kept.plan.fp32 == ("head",)
    assert int8_weight_layers(kept.path) == {"conv", "proj"} and float_weights(kept.path) == 1


def test_one_error_names_what_is_allowed(net, tmp_path) -> None:
    for bad in ("fast", "yes", 1, None):
        with pytest.raises(ExportError, match=r"int8 must be one of 'auto', 'static', 'dynamic', True, False; got"):
            export(net, tmp_path, example=inputs(8, 0), int8=bad)
    assert not list(tmp_path.iterdir())  # nothing written
    assert issubclass(ExportMismatchError, ExportError) and issubclass(Int8AccuracyError, ExportError)
    assert issubclass(ExportError, RuntimeError)  # the old `except RuntimeError` clauses still catch it
    with pytest.raises(ExportError, match="static int8 needs calibration inputs"):
        export(net, tmp_path / "s", example=inputs(8, 0), int8="static")
    with pytest.raises(ExportError, match=r"^exclude: unknown layer 'tail'; layers with weights that can be kept in fp32: conv, head, proj$"):
        export(net, tmp_path / "e", example=inputs(8, 0), int8="static", calibration=inputs(64, 4), exclude=["tail"])
    cnn = nn.Sequential(nn.Conv1d(2, 4, 3), nn.Flatten(), nn.Linear(56, 3)).eval()
    with pytest.raises(ExportError, match="no layer of this model runs in dynamic int8"):
        export(cnn, tmp_path / "d", example=inputs(8, 0), int8="dynamic")
    with pytest.raises(ExportError, match=r"give example="):
        export(net, tmp_path / "x")


def toy_task() -> Task:
    x, y = inputs(192, 6), torch.randint(0, 4, (192,), generator=torch.Generator().manual_seed(7))
    return Task("toy", train=(x[:128], y[:128]), val=(x[128:], y[128:]))


def test_auto_measures_every_variant_and_keeps_the_fastest_within_the_drop(net, tmp_path) -> None:
    task = toy_task()
    report = export(net, tmp_path, task=task, max_drop=100.0, repeats=3)
    assert report.path == tmp_path / "model.onnx" and list(report.paths) == [report.chosen]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # the variants were made in a scratch folder
    assert report.split == "val" and list(report.variants) == ["fp32", "int8-static", "int8-dynamic"]
    made = {k: v for k, v in report.variants.items() if v.made}
    assert set(made) == {"fp32", "int8-static", "int8-dynamic"}
    assert all(v.latency_ms > 0 and 0 <= v.metric <= 100 and v.bytes > 0 for v in made.values())
    assert made["fp32"].latency_ratio == 1.0 and made["fp32"].drop == 0.0  # no original: the fp32 file is the reference
    assert report.chosen == min(made, key=lambda k: made[k].latency_ms)  # every drop is within 100 points
    assert report.variants["int8-dynamic"].plan.layers == ("proj",)
    record = report.as_dict()
    assert record["chosen"] == report.chosen and record["variants"]["int8-static"]["plan"]["int8"] == list(LAYERS)
    # without a task there is no drop to measure: fp32, and the report says why
    plain = export(net, tmp_path / "plain", example=inputs(8, 0))
    assert plain.chosen == "fp32" and "none was given" in plain.why


def test_a_candidate_brings_its_settings_and_arguments_win(net, tmp_path) -> None:
    task = toy_task()

    class Candidate:  # what compress()'s Candidate hands over (autocompress.result.Candidate.export_settings)
        def export_settings(self) -> dict:
            return {"model": net, "original": net, "task": task, "output": None, "max_drop": 3.0, "batch": 8}

    report = export(Candidate(), tmp_path, int8=False, latency=True, repeats=3, batch=16)
    assert list(report.variants) == ["original", "fp32"] and report.paths == {"fp32": tmp_path / "model.onnx"}
    original, fp32 = report.variants["original"], report.variants["fp32"]
    assert original.latency_ratio == 1.0 and original.drop == 0.0
    assert fp32.metric == original.metric and fp32.drop == 0.0  # the same model: the same metric on val
    assert fp32.latency_ms > 0 and report.batch == 16 and report.max_drop == 3.0  # batch given here, max_drop the candidate's
    assert report.as_dict()["variants"]["original"] == {"made": True, "metric": original.metric, "latency_ms": original.latency_ms,
                                                        "bytes": original.bytes, "latency_ratio": 1.0, "drop": 0.0}


def test_the_package_is_callable_and_still_a_package(net, tmp_path) -> None:
    import autocompress.export as package

    assert ac.export is package is sys.modules["autocompress.export"]
    assert package.export_onnx is ac.export_onnx and package.export is export  # modules and names reachable
    report = ac.export(net, tmp_path, example=inputs(8, 0), int8=False)  # the package called is export()
    assert report.path.is_file() and isinstance(report, ac.ExportReport)
