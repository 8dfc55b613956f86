import json

import pytest
from rich.console import Console
from typer.testing import CliRunner

from autocompress import cli
from autocompress.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setattr(cli, "console", Console(width=250))


def test_inspect_lists_layers_methods_and_reasons():
    result = runner.invoke(app, ["inspect", "--zoo", "mnist1d-resnet"])
    assert result.exit_code == 0, result.output
    assert "output layer" in result.output
    assert "depthwise" in result.output
    assert "channel groups" in result.output


def test_unknown_zoo_model_lists_the_allowed_ones():
    result = runner.invoke(app, ["inspect", "--zoo", "resnet50"])
    assert result.exit_code == 2
    assert "unknown zoo model 'resnet50'" in result.output and "mnist1d-cnn" in result.output


def test_policy_then_apply_writes_model_onnx_and_summary(tmp_path):
    policy = tmp_path / "p.json"
    result = runner.invoke(app, ["policy", "--zoo", "wine-mlp", "--prune", "0.5", "--weight-bits", "8", "--act-bits", "8", "--out", str(policy)])
    assert result.exit_code == 0, result.output
    assert json.loads(policy.read_text())["layers"]
    out = tmp_path / "small"
    result = runner.invoke(app, ["apply", "--zoo", "wine-mlp", "--policy", str(policy), "--out", str(out), "--finetune-epochs", "1"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for name in ("policy.json", "state_dict.pt", "meta.json", "model.onnx", "summary.json"):
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ratios"]["params"] < 0.6
    assert summary["ort_latency_ms"]["compressed"] > 0
    assert "faster" in result.output


def test_apply_rejects_a_bad_policy(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"layers": {"net.0": {"prune": 2.0}}}))
    result = runner.invoke(app, ["apply", "--zoo", "wine-mlp", "--policy", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "prune" in result.output and "0.95" in result.output
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"layers": {"nope": {"prune": 0.5}}}))
    result = runner.invoke(app, ["apply", "--zoo", "wine-mlp", "--policy", str(unknown), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "unknown layer 'nope'" in result.output
