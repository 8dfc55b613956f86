"""Int8 deployment: static QDQ quantization of exported ONNX models in ONNX Runtime.

Tolerances, stated once: on the val split the int8 model's argmax agrees with the fp32
ONNX model's on >= 97 % of samples (measured: 99.4 % and 100 %), its largest output
difference is at most 25 % of the fp32 outputs' largest magnitude (measured: 3 % on
mnist1d-cnn; 15 % on wine-mlp, whose val inputs go beyond the range of its 124
calibration samples), and its test accuracy is within 1 point (measured: 0.1 and 0).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from autocompress.export import (
    Int8AccuracyError,
    compare_onnx_outputs,
    export_int8,
    export_onnx,
    layer_nodes,
    onnx_metric,
    prepare_for_quantization,
    quantize_onnx_int8,
    quantized_weight_nodes,
)
from autocompress.finetune import evaluate_metric, train
from autocompress.threads import single_threaded
from autocompress.zoo import load_zoo

MIN_ARGMAX_AGREEMENT = 97.0  # percent of val samples
MAX_RELATIVE_DIFF = 0.25  # max |int8 - fp32| / max |fp32| on the val split
MAX_METRIC_DROP = 1.0  # accuracy points on the test split


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small models: one torch thread (training mnist1d-cnn below: 9 s; 65 s on 2 threads of a
    busy 2-core machine). Only speed changes."""
    with single_threaded():
        yield


@pytest.fixture(scope="module")
def mnist_cnn(one_thread):
    """mnist1d-cnn trained briefly (a fixed 120 steps, ~83 % val accuracy: seconds, not a minute)."""
    entry = load_zoo("mnist1d-cnn", pretrained=False, seed=0)
    train(entry.model, entry.task, steps=120, lr=3e-3, optimizer="adamw", weight_decay=1e-2)
    entry.model.eval()
    return entry


@pytest.fixture(scope="module")
def wine(one_thread):
    return load_zoo("wine-mlp", pretrained=True, seed=0)


@pytest.fixture(scope="module")
def mnist_int8(mnist_cnn, tmp_path_factory):
    out = tmp_path_factory.mktemp("mnist-int8")
    calibration = mnist_cnn.task.split("train")[0][:512]
    return export_int8(mnist_cnn.model, out / "model.onnx", mnist_cnn.example_input, calibration)


def _check_agreement(made, task) -> None:
    val_inputs = task.split("val")[0]
    agreement = compare_onnx_outputs(made.fp32_path, made.int8_path, val_inputs)
    assert agreement.argmax_agreement >= MIN_ARGMAX_AGREEMENT
    assert agreement.relative_diff <= MAX_RELATIVE_DIFF
    assert 0 < made.agreement.relative_diff <= MAX_RELATIVE_DIFF  # the check batch


def test_mnist1d_cnn_int8_is_smaller_close_and_as_accurate(mnist_cnn, mnist_int8) -> None:
    made = mnist_int8
    assert made.int8_path == made.fp32_path.with_name("model.int8.onnx")
    assert made.fp32_bytes == made.fp32_path.stat().st_size
    # 415,690 fp32 weights (1.66 MB) dominate: int8 weights plus scales, int32 biases and the graph
    assert made.size_ratio >= 3.5
    assert made.fp32_nodes == []
    assert all(quantized_weight_nodes(made.int8_path).values())
    _check_agreement(made, mnist_cnn.task)
    fp32_metric = onnx_metric(made.fp32_path, mnist_cnn.task)
    int8_metric = onnx_metric(made.int8_path, mnist_cnn.task)
    assert fp32_metric == pytest.approx(
        evaluate_metric(mnist_cnn.model, mnist_cnn.task, "test"), abs=0.05
    )
    assert fp32_metric > 70.0
    assert abs(int8_metric - fp32_metric) <= MAX_METRIC_DROP


def test_wine_mlp_int8_folds_batchnorm_and_stays_accurate(wine, tmp_path: Path) -> None:
    calibration = wine.task.split("train")[0]
    made = export_int8(wine.model, tmp_path / "wine.onnx", wine.example_input, calibration)
    assert made.size_ratio >= 3.0  # 70k weights; per-channel scales and int32 biases cost the rest
    ops = [node.op_type for node in onnx.load(str(made.int8_path)).graph.node]
    assert "BatchNormalization" not in ops  # folded into the Gemms before quantization
    assert ops.count("Gemm") == 3
    assert all(quantized_weight_nodes(made.int8_path).values())
    _check_agreement(made, wine.task)
    fp32_metric, int8_metric = (
        onnx_metric(made.fp32_path, wine.task),
        onnx_metric(made.int8_path, wine.task),
    )
    assert abs(int8_metric - fp32_metric) <= MAX_METRIC_DROP


def test_preparation_keeps_fp32_outputs(wine, tmp_path: Path) -> None:
    fp32 = export_onnx(wine.model, tmp_path / "wine.onnx", wine.example_input)
    prepared = prepare_for_quantization(fp32, tmp_path / "prepared.onnx")
    agreement = compare_onnx_outputs(fp32, prepared, wine.task.split("val")[0])
    assert agreement.max_abs_diff <= 1e-4 * max(1.0, agreement.output_scale)
    ops = [node.op_type for node in onnx.load(str(prepared)).graph.node]
    assert "BatchNormalization" not in ops


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_histogram_calibration_with_a_partial_last_batch(wine, tmp_path: Path, method: str) -> None:
    fp32 = export_onnx(wine.model, tmp_path / "wine.onnx", wine.example_input)
    calibration = wine.task.split("train")[0][:100]  # batches of 64: one full, one partial
    out = quantize_onnx_int8(fp32, tmp_path / "q.onnx", calibration, calibration_method=method)
    agreement = compare_onnx_outputs(fp32, out, wine.task.split("val")[0])
    assert agreement.argmax_agreement >= MIN_ARGMAX_AGREEMENT


def _weight_is_int8(path: Path) -> dict[str, bool]:
    """Node name -> its weight input comes out of a DequantizeLinear (read from the graph)."""
    graph = onnx.load(str(path)).graph
    producers = {out: node for node in graph.node for out in node.output}
    return {
        node.name: getattr(producers.get(node.input[1]), "op_type", None) == "DequantizeLinear"
        for node in graph.node
        if node.op_type in ("Conv", "Gemm")
    }


def test_exclude_keeps_that_layer_in_fp32(mnist_cnn, tmp_path: Path) -> None:
    calibration = mnist_cnn.task.split("train")[0][:256]
    made = export_int8(
        mnist_cnn.model,
        tmp_path / "m.onnx",
        mnist_cnn.example_input,
        calibration,
        exclude=["features.3"],
    )
    assert made.fp32_nodes == ["/features/features.3/Conv"]
    weights = _weight_is_int8(made.int8_path)
    assert weights.pop("/features/features.3/Conv") is False
    assert len(weights) == 5 and all(weights.values())
    graph = onnx.load(str(made.int8_path)).graph
    conv = next(n for n in graph.node if n.name == "/features/features.3/Conv")
    fp32_weight = next(i for i in graph.initializer if i.name == conv.input[1])
    assert fp32_weight.data_type == onnx.TensorProto.FLOAT
    # a parent module keeps all of its layers
    fp32 = made.fp32_path
    out = quantize_onnx_int8(fp32, tmp_path / "c.onnx", calibration, exclude=["classifier"])
    kept = {name for name, is_int8 in _weight_is_int8(out).items() if not is_int8}
    assert kept == {"/classifier/classifier.1/Gemm", "/classifier/classifier.3/Gemm"}


def test_a_quantized_model_is_deployed_at_its_own_precision(mnist_cnn, tmp_path: Path) -> None:
    from autocompress import Policy, SearchSpace, apply_policy
    from autocompress.export import static_int8_layers
    from autocompress.transforms.quantize import calibrate_activations, quantize_layer

    model, task = mnist_cnn.model, mnist_cnn.task
    space = SearchSpace.from_model(model, mnist_cnn.example_input, methods=["quant"])
    bits = {"features.0": (32, 32), "features.3": (4, 8), "features.7": (8, 8), "classifier.1": (8, 32)}
    policy = Policy.from_dict({"layers": {n: {"weight_bits": w, "act_bits": a} for n, (w, a) in bits.items()}})
    quantized = apply_policy(model, policy, space=space, example_input=mnist_cnn.example_input)
    calibration = task.split("train")[0][:256]
    calibrate_activations(quantized, calibration.split(64))
    int8, fp32 = static_int8_layers(quantized)
    assert int8 == ["features.3", "features.7"] and "features.0" in fp32 and "classifier.1" in fp32
    made = export_int8(quantized, tmp_path / "q.onnx", mnist_cnn.example_input, calibration)
    weights = _weight_is_int8(made.int8_path)
    assert {n for n, is_int8 in weights.items() if is_int8} == {"/features/features.3/Conv", "/features/features.7/Conv"}
    # the model's own activation fake quantization is gone: ONNX Runtime's int8 ranges replace it
    ops = {n.op_type for n in onnx.load(str(made.int8_path)).graph.node}
    assert not ops & {"Round", "Div", "Clip"}
    assert made.agreement.argmax_agreement >= MIN_ARGMAX_AGREEMENT  # against the quantized model's own file
    assert made.agreement.relative_diff <= MAX_RELATIVE_DIFF
    pytorch = evaluate_metric(quantized, task, "test")
    assert onnx_metric(made.int8_path, task, "test") == pytest.approx(pytorch, abs=MAX_METRIC_DROP)
    # a dynamic search space leaves this Linear (2-D inputs: a Gemm) alone, so build the wrapper by hand
    dynamic = copy.deepcopy(model)
    dynamic.classifier[1] = quantize_layer(dynamic.classifier[1], 8, 8, dynamic=True)
    with pytest.raises(ValueError, match="layer 'classifier.1' has dynamic input ranges; deploy .*export_dynamic_int8"):
        static_int8_layers(dynamic)


def test_layer_names_map_to_their_onnx_nodes(tmp_path: Path) -> None:
    """Every Conv/Linear of a nested model (residual blocks, shortcut Sequentials) is found."""
    entry = load_zoo("mnist1d-resnet", pretrained=False, seed=0)
    prepared = prepare_for_quantization(
        export_onnx(entry.model, tmp_path / "r.onnx", entry.example_input), tmp_path / "p.onnx"
    )
    mapping = layer_nodes(onnx.load(str(prepared)))
    layers = [n for n, m in entry.model.named_modules() if isinstance(m, nn.Conv1d | nn.Linear)]
    assert "blocks.2.shortcut.0" in layers
    for name in layers:
        assert len(mapping[name]) == 1, name
    assert mapping["blocks.2.shortcut.0"] == ["/blocks/blocks.2/shortcut/shortcut.0/Conv"]
    assert len(mapping["blocks.2"]) == 3  # depthwise, pointwise, shortcut
    # a bare Sequential: top-level numeric names
    seq = nn.Sequential(
        nn.Linear(4, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 8), nn.ReLU()), nn.Linear(8, 2)
    )
    path = export_onnx(seq, tmp_path / "s.onnx", torch.randn(2, 4))
    mapping = layer_nodes(onnx.load(str(path)))
    assert {name: len(nodes) for name, nodes in mapping.items()} == {
        "0": 1,
        "2": 1,
        "2.0": 1,
        "3": 1,
    }


def test_bad_inputs_give_clear_errors(wine, tmp_path: Path) -> None:
    fp32 = export_onnx(wine.model, tmp_path / "wine.onnx", wine.example_input)
    calibration = wine.task.split("train")[0][:64]
    with pytest.raises(ValueError, match="no samples"):
        quantize_onnx_int8(fp32, tmp_path / "q.onnx", calibration[:0])
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        quantize_onnx_int8(tmp_path / "missing.onnx", tmp_path / "q.onnx", calibration)
    with pytest.raises(ValueError, match=r"unknown layer 'body\.7'.*body\.0, body\.3, head"):
        quantize_onnx_int8(fp32, tmp_path / "q.onnx", calibration, exclude=["body.7"])
    with pytest.raises(
        ValueError, match="calibration_method 'kl'; allowed: minmax, entropy, percentile"
    ):
        quantize_onnx_int8(fp32, tmp_path / "q.onnx", calibration, calibration_method="kl")
    with pytest.raises(ValueError, match="activation_type"):
        quantize_onnx_int8(fp32, tmp_path / "q.onnx", calibration, activation_type="int4")
    with pytest.raises(ValueError, match="inputs"):
        quantize_onnx_int8(fp32, tmp_path / "q.onnx", (calibration, calibration))
    assert not (tmp_path / "q.onnx").exists()
    with pytest.raises(Int8AccuracyError, match="tolerance"):
        export_int8(
            wine.model, tmp_path / "w.onnx", wine.example_input, calibration, check_tolerance=1e-6
        )
    assert (tmp_path / "w.onnx").exists() and not (tmp_path / "w.int8.onnx").exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_user_model_is_not_mutated(wine, tmp_path: Path) -> None:
    model = copy.deepcopy(wine.model).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_int8(model, tmp_path / "w.onnx", wine.example_input, wine.task.split("train")[0])
    assert model.training and all(m.training for m in model.modules())
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_cli_export_int8_writes_and_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console

    from autocompress import cli

    monkeypatch.setattr(cli.common, "console", Console(width=250))
    runner = CliRunner()
    storage = tmp_path / "wine.db"
    config = tmp_path / "search.yaml"
    config.write_text(
        "zoo: wine-mlp\nobjectives: [accuracy, flops]\nstrategy: random\n"
        f"budget: 1\nstorage: {storage}\nstudy: wine-int8\nfinetune_epochs: 0.0\n"
    )
    result = runner.invoke(cli.app, ["search", str(config)], terminal_width=200)
    assert result.exit_code == 0, result.output
    out = tmp_path / "best"
    args = [
        "export",
        str(storage),
        "--trial",
        "0",
        "--out",
        str(out),
        "--finetune-epochs",
        "0",
        "--int8",
    ]
    result = runner.invoke(cli.app, [*args, "--calibration-batches", "2"])
    assert result.exit_code == 0, result.output
    assert (out / "model.onnx").exists() and (out / "model.int8.onnx").exists()
    assert (
        "int8: model.int8.onnx" in result.output
        and "calibrated on 64 training samples" in result.output
    )
    assert "fp32" in result.output and "smaller" in result.output
    result = runner.invoke(cli.app, [*args, "--calibration-batches", "0"])
    assert result.exit_code == 2 and "--calibration-batches must be >= 1" in result.output
    assert np.isfinite(onnx_metric(out / "model.int8.onnx", load_zoo("wine-mlp", seed=0).task))
