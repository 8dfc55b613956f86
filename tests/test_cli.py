import json

import numpy as np
import pytest
import torch
from rich.console import Console
from torch import nn
from typer.testing import CliRunner

from autocompress import cli
from autocompress.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setattr(cli.common, "console", Console(width=250))


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


def test_search_front_confirm_and_export_from_the_command_line(tmp_path):
    storage = tmp_path / "wine.db"
    config = tmp_path / "search.yaml"
    config.write_text(
        "zoo: wine-mlp\nobjectives: [accuracy, flops]\nstrategy: allocate\nstrategy_params: {targets: [0.5], population: 3}\n"
        f"budget: 5\nstorage: {storage}\nstudy: wine-allocate\nfinetune_epochs: 0.0\n"
    )
    result = runner.invoke(app, ["search", str(config)], terminal_width=200)
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["confirm", str(storage), "--best", "flops_ratio<=0.5", "--top", "2", "--finetune-epochs", "1"],
                           terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "confirmed with 1 epochs" in result.output and "best meeting flops_ratio<=0.5" in result.output
    companion = result.output.split("--study '")[1].split("'")[0]
    assert companion.startswith("wine-allocate/confirm-")
    trial = int(result.output.split("--trial ")[1].split()[0])
    result = runner.invoke(app, ["front", str(storage)], terminal_width=200)  # the search, not its companion
    assert result.exit_code == 0 and "5 candidates" in result.output, result.output
    result = runner.invoke(app, ["export", str(storage), "--study", companion, "--trial", str(trial), "--out", str(tmp_path / "best")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "best" / "model.onnx").exists()
    result = runner.invoke(app, ["confirm", str(storage), "--best", "flops_ratio<=0.001"], terminal_width=200)
    assert result.exit_code != 0 and "closest" in result.output


def test_optimize_returns_a_policy_for_a_new_budget_without_training(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path / "cache"))
    storage = tmp_path / "wine.db"
    config = tmp_path / "search.yaml"
    config.write_text(
        "zoo: wine-mlp\nobjectives: [accuracy, bitops]\nstrategy: random\n"
        f"budget: 10\nstorage: {storage}\nstudy: wine-random\nfinetune_epochs: 0.0\n"
    )
    assert runner.invoke(app, ["search", str(config)]).exit_code == 0
    out = tmp_path / "p.json"
    result = runner.invoke(app, ["optimize", str(storage), "--budget", "bitops_ratio<=0.2", "--kind", "gp", "--out", str(out)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "fitted on 10 labelled policies" in result.output and "predicted accuracy" in result.output
    from autocompress.policy import Policy
    from autocompress.search.config import load_config

    _, _, space = load_config(config).build()
    assert space.cost(Policy.load(out)).bitops <= 0.2 * space.cost(Policy()).bitops
    result = runner.invoke(app, ["optimize", str(storage), "--budget", "speed<=2"], terminal_width=400)
    assert result.exit_code != 0 and "unknown key 'speed'" in result.output and "latency_ratio" in result.output
    result = runner.invoke(app, ["optimize", str(storage), "--budget", "bitops=0.2"], terminal_width=400)
    assert result.exit_code != 0 and "did you mean 'bitops_ratio<=0.2'" in result.output
    result = runner.invoke(app, ["optimize", str(storage), "--budget", "bitops_ratio<=1e-9", "--kind", "linear"])
    assert result.exit_code != 0 and "smallest reachable" in result.output
    from test_lut import Counter

    # deterministic stub timings: the test checks the plumbing, not this machine's speed
    monkeypatch.setattr("autocompress.hardware.lut.time_layer", Counter())
    fast = runner.invoke(app, ["optimize", str(storage), "--budget", "latency_ratio<=0.7", "--kind", "gp",
                               "--target", "ort-cpu:batch=512,repeats=5,warmup=2"], terminal_width=200)
    assert fast.exit_code == 0, fast.output
    assert "latency model: lookup table on ort-cpu" in fast.output and "latency_ratio<=0.7" in fast.output
    assert list((tmp_path / "cache" / "latency").glob("ort-cpu-*.json"))


def test_profile_prints_layers_and_whole_model_latency(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path))
    result = runner.invoke(app, ["profile", "--zoo", "wine-mlp", "--target", "ort-cpu:batch=2,repeats=3,warmup=1"])
    assert result.exit_code == 0, result.output
    assert "Linear 13->" in result.output and "measured whole model: median" in result.output
    assert "3 layer configurations timed now" in result.output
    again = runner.invoke(app, ["profile", "--zoo", "wine-mlp", "--target", "ort-cpu:batch=2,repeats=3,warmup=1"])
    assert "0 layer configurations timed now" in again.output  # the table file is reused
    bad = runner.invoke(app, ["profile", "--zoo", "wine-mlp", "--target", "tpu"])
    assert bad.exit_code != 0 and "allowed: ort-cpu, ort-cpu-int8, torch-cpu, torch-cuda" in bad.output


def test_an_apq_search_from_yaml_names_its_supernet_and_exports_a_sub_network(tmp_path):
    import onnxruntime as ort

    from autocompress.search import Study
    from autocompress.search.config import ConfigError, load_config

    storage = tmp_path / "apq.db"
    config = tmp_path / "apq.yaml"
    config.write_text(
        "elastic: elastic_fixtures:digits_supernet\ntask: elastic_fixtures:digits_task\nobjectives: [accuracy, bitops]\n"
        "strategy: apq\nstrategy_params: {targets: ['bitops_ratio<=0.02'], fp_samples: 8, q_samples: 2, population: 12, "
        f"iterations: 4, final: 1, epochs: 50}}\nbudget: 3\nstorage: {storage}\nstudy: digits-apq\nfinetune_epochs: 0.0\n"
    )
    result = runner.invoke(app, ["search", str(config)], terminal_width=200)
    assert result.exit_code == 0, result.output
    study = Study.open(storage, "digits-apq", create=False)
    final = next(r for r in study.completed() if r.tags.get("phase") == "final")
    assert final.policy.arch is not None and final.values["bitops_ratio"] <= 0.02
    result = runner.invoke(app, ["export", str(storage), "--trial", str(final.number), "--out", str(tmp_path / "best")])
    assert result.exit_code == 0, result.output
    session = ort.InferenceSession(str(tmp_path / "best" / "model.onnx"), providers=["CPUExecutionProvider"])
    from elastic_fixtures import digits_supernet, digits_task

    x = digits_task().example_input(4).numpy()
    assert session.run(None, {session.get_inputs()[0].name: x})[0].shape == (4, 10)
    # the exported model is the candidate's sub-network, not the largest one

    from autocompress.elastic import SubnetConfig

    params = sum(p.numel() for p in digits_supernet().extract(SubnetConfig.from_vector(final.policy.arch)).parameters())
    saved = torch_load_params(tmp_path / "best" / "state_dict.pt")
    assert saved == params < sum(p.numel() for p in digits_supernet().extract(digits_supernet().largest()).parameters())
    from autocompress.search.evaluation import run_candidate, spec_from_config

    values, error, _ = run_candidate(spec_from_config(load_config(config)), final.policy)  # what `autocompress worker` runs
    assert error is None and values["metric"] == pytest.approx(final.values["metric"])
    from autocompress.saving import load

    with torch.no_grad():  # saved and loaded from the supernet: the exported file's outputs
        loaded = load(tmp_path / "best", digits_supernet())(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(loaded, session.run(None, {session.get_inputs()[0].name: x})[0], atol=1e-4)
    with pytest.raises(ValueError, match="pass that supernet as `model`"):
        load(tmp_path / "best", nn.Linear(64, 10))
    result = runner.invoke(app, ["confirm", str(storage), "--best", "bitops_ratio<=0.02", "--top", "1", "--finetune-epochs", "0.2"],
                           terminal_width=200)
    assert result.exit_code == 0, result.output
    with pytest.raises(ConfigError, match="not an elastic supernet"):
        load_config({"elastic": "elastic_fixtures:not_a_supernet", "task": "elastic_fixtures:digits_task"}).load_elastic()
    with pytest.raises(ConfigError, match="`model` may be left out"):
        load_config({"task": "elastic_fixtures:digits_task"})


def torch_load_params(path) -> int:  # noqa: ANN001
    return sum(t.numel() for k, t in torch.load(path).items() if k.endswith(("weight", "bias")) and t.dtype.is_floating_point)
