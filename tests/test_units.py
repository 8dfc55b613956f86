"""ODF2NNA dense refinement (transforms/units.py), its pruning importance and its CLI command."""

import json

import pytest
import torch
from rich.console import Console
from torch import nn
from typer.testing import CliRunner

import autocompress as ac
from autocompress import cli, count_cost
from autocompress.apply import apply_policy
from autocompress.finetune import evaluate_loss, train
from autocompress.search.refine import refine_dense, reinitialized, sweep_epsilon
from autocompress.search.refine_gate import (
    DEFAULT_CONFIDENCE,
    DEFAULT_REGRESSION_LOSS_TOLERANCE,
    choose_epsilon,
)
from autocompress.search.refine_report import SweepPoint
from autocompress.task import Task
from autocompress.transforms.dense_chain import DenseStructureError, dense_chain
from autocompress.transforms.prune import activation_std_importance
from autocompress.zoo.models import TabularMLP

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setattr(cli.common, "console", Console(width=250))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one thread is faster, and much faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _mlp(batchnorm: bool = True, dropout: float = 0.0, hidden=(32, 24), seed: int = 0) -> TabularMLP:
    """A TabularMLP with non-trivial BN running statistics, in eval mode."""
    torch.manual_seed(seed)
    model = TabularMLP(6, 3, hidden=hidden, batchnorm=batchnorm, dropout=dropout)
    model.train()
    with torch.no_grad():
        for _ in range(5):
            model(torch.randn(64, 6) * 2 + 0.5)
    return model.eval()


def _task(n: int = 240, seed: int = 0) -> Task:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=generator)
    y = (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    third = n // 3
    return Task("toy", (x[:third * 2], y[:third * 2]), (x[third * 2 :], y[third * 2 :]), (x[third * 2 :], y[third * 2 :]), batch_size=32)


def _snapshot(model: nn.Module) -> dict[str, bytes]:
    return {k: (str(v.dtype), v.detach().cpu().contiguous().numpy().tobytes()) for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- exactness


def test_epsilon_zero_removes_nothing_and_outputs_are_identical():
    model = _mlp(dropout=0.1)
    x = torch.randn(100, 6)
    small, report = refine_dense(model, x, epsilon=0.0)
    assert all(layer.removed == 0 for layer in report.layers)
    assert report.params_after == report.params_before and report.output_bound == 0.0
    assert torch.equal(small(x), model(x))
    assert small is not model and type(small) is TabularMLP


def test_constant_units_are_folded_exactly():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    with torch.no_grad():  # units 0..5 ignore their input: constant outputs 0.0 .. 0.5 (positive bias)
        model[0].weight[:6] = 0.0
        model[0].bias[:6] = torch.arange(6) / 10
    x = torch.randn(200, 4)
    small, report = refine_dense(model, x, epsilon=1e-6, statistic="std")
    assert report.layers[0].kept_units == list(range(6, 16))
    assert small[0].out_features == 10 and small[2].in_features == 10
    assert torch.allclose(small(x), model(x), atol=1e-5)
    # without folding the bias the constant units' contribution would be missing
    assert not torch.allclose(small[2](small[1](small[0](x))) - small[2].bias + model[2].bias, model(x), atol=1e-3)


def test_last_layer_removal_obeys_the_variability_bound():
    """|refined(x) - original(x)| <= sum over removed units of |w_out| * max |a - mean(a)|."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 40), nn.Tanh(), nn.Linear(40, 2))
    x = torch.randn(300, 5)
    small, report = refine_dense(model, x, epsilon=0.5, statistic="contribution_max")
    removed = [j for j in range(40) if j not in report.layers[0].kept_units]
    assert 0 < len(removed) < 40
    with torch.no_grad():
        a = model[1](model[0](x)).double()
        deviation = (a - a.mean(dim=0)).abs().amax(dim=0)
        bound = model[2].weight.double().abs()[:, removed] @ deviation[removed]
        difference = (small(x) - model(x)).abs().double()
    assert (difference <= bound + 1e-5).all()
    assert difference.max() > 0.01 * bound.max()  # the bound is not vacuous
    assert report.output_bound == pytest.approx(float(bound.max()), rel=1e-6)


@pytest.mark.parametrize("batchnorm", [True, False])
def test_multilayer_removal_obeys_the_propagated_bound(batchnorm):
    model = _mlp(batchnorm=batchnorm, dropout=0.2, hidden=(48, 32, 24))
    x = torch.randn(256, 6) * 2 + 0.5
    small, report = refine_dense(model, x, epsilon=0.3)
    assert all(0 < layer.removed < layer.units for layer in report.layers)
    with torch.no_grad():
        difference = (small(x) - model(x)).abs()
    assert float(difference.max()) <= report.output_bound + 1e-5


def test_parameter_count_matches_the_kept_units():
    model = _mlp(hidden=(32, 24))
    x = torch.randn(128, 6) * 2 + 0.5
    small, report = refine_dense(model, x, epsilon=0.5)
    k1, k2 = report.hidden
    assert (k1, k2) == (report.layers[0].kept, report.layers[1].kept) and k1 < 32 and k2 < 24
    by_hand = (6 * k1 + k1 + 2 * k1) + (k1 * k2 + k2 + 2 * k2) + (k2 * 3 + 3)
    assert count_cost(small, x[:1]).params == by_hand == report.params_after
    rebuilt = TabularMLP(6, 3, hidden=report.hidden)
    rebuilt.load_state_dict(small.state_dict())  # same class, same keys, smaller shapes


def test_larger_epsilon_keeps_a_subset():
    model = _mlp()
    x = torch.randn(128, 6)
    kept = [refine_dense(model, x, epsilon=e).report.layers for e in (0.1, 0.4, 0.8)]
    for looser, stricter in zip(kept, kept[1:], strict=False):
        for a, b in zip(looser, stricter, strict=True):
            assert set(b.kept_units) <= set(a.kept_units)
            assert b.kept >= 1  # every layer keeps its best unit


def test_input_model_is_untouched_even_with_auto_and_retraining():
    model = _mlp()
    model.body[1].train()  # a mixed-mode model: modes must survive too
    before, modes = _snapshot(model), [m.training for m in model.modules()]
    task = _task()
    small, report = refine_dense(model, task, "auto", tolerance=100.0, retrain_epochs=1, epsilons=[0.0, 0.5])
    assert _snapshot(model) == before
    assert [m.training for m in model.modules()] == modes
    assert report.epsilon == 0.5 and report.met_tolerance and report.metric_retrained is not None
    assert all(p.data_ptr() not in {q.data_ptr() for q in model.parameters()} for p in small.parameters())


# --------------------------------------------------------------------------- sweep and automatic epsilon


def test_sweep_marks_the_non_dominated_points():
    model = _mlp()
    points = [p for p, _ in sweep_epsilon(model, _task(), [0.0, 0.3, 0.6, 0.9], retrain_epochs=0.5)]
    assert [p.epsilon for p in points] == [0.0, 0.3, 0.6, 0.9]
    assert [p.params for p in points] == sorted((p.params for p in points), reverse=True)
    for p in points:
        dominated = any(q.params <= p.params and q.metric >= p.metric and (q.params, q.metric) != (p.params, p.metric) for q in points)
        assert p.on_front == (not dominated)


def test_choose_epsilon_takes_the_largest_within_tolerance():
    points = [SweepPoint(epsilon=e, params=100 - 10 * i, hidden=[1], metric_before_retrain=0.0, metric=m)
              for i, (e, m) in enumerate([(0.0, 90.0), (0.2, 89.8), (0.4, 88.0), (0.6, 89.6), (0.8, 70.0)])]
    assert choose_epsilon(points, original_metric=90.0, tolerance=0.5).epsilon == 0.6
    assert choose_epsilon(points, original_metric=90.0, tolerance=0.1).epsilon == 0.0
    assert choose_epsilon(points, original_metric=95.0, tolerance=0.5) is None
    with pytest.raises(ValueError, match="tolerance must be >= 0"):
        choose_epsilon(points, 90.0, -1.0)


def test_auto_stops_at_the_first_epsilon_within_tolerance():
    model = _mlp()
    small, report = refine_dense(model, _task(), "auto", tolerance=1000.0, retrain_epochs=0.5)
    assert report.epsilon == 0.9 and [p.epsilon for p in report.sweep] == [0.9]  # nothing else was trained
    assert report.hidden == [p.hidden for p in report.sweep][0]
    kept_all, none_good = refine_dense(model, _task(), "auto", tolerance=0.0, retrain_epochs=0.5, epsilons=[0.9])
    assert none_good.sweep[0].metric < none_good.metric_original  # 0.9 keeps too little here
    assert none_good.met_tolerance is False and none_good.epsilon == 0.0  # so nothing is removed
    assert none_good.params_after == none_good.params_before and none_good.metric_retrained is None
    assert torch.equal(kept_all(_task().val[0]), model(_task().val[0]))


def test_reinitialized_keeps_the_architecture_and_redraws_weights():
    model = _mlp()
    fresh = reinitialized(model, seed=3)
    assert [p.shape for p in fresh.parameters()] == [p.shape for p in model.parameters()]
    assert not torch.equal(fresh.body[0].weight, model.body[0].weight)
    assert torch.equal(reinitialized(model, seed=3).body[0].weight, fresh.body[0].weight)


# --------------------------------------------------------------------------- bad input


def test_non_dense_models_are_refused_naming_the_module():
    conv = nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
    with pytest.raises(DenseStructureError, match=r"'0' is a Conv1d; a dense network may hold only: Linear"):
        refine_dense(conv, torch.randn(4, 1, 10), 0.1)
    with pytest.raises(DenseStructureError, match="at least two Linear"):
        refine_dense(nn.Sequential(nn.Linear(3, 2)), torch.randn(4, 3), 0.1)

    class Skip(nn.Module):  # Linear layers only, but the forward is not a chain
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 3)

        def forward(self, x):
            return self.b(x) + self.a(x)

    with pytest.raises(DenseStructureError, match="not its modules applied in registration order"):
        refine_dense(Skip(), torch.randn(8, 3), 0.1)
    no_stats = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, track_running_stats=False), nn.Linear(4, 2))
    with pytest.raises(DenseStructureError, match="'1' has no running statistics"):
        dense_chain(no_stats)


def test_bad_arguments_name_the_problem():
    model, x = _mlp(), torch.randn(16, 6)
    with pytest.raises(ValueError, match=r"epsilon must be a finite number >= 0.*got -0.1"):
        refine_dense(model, x, -0.1)
    with pytest.raises(ValueError, match="epsilon must be a number >= 0 or 'auto', got 'big'"):
        refine_dense(model, x, "big")
    with pytest.raises(ValueError, match="unknown unit statistic 'variance'; allowed: std, std_mean"):
        refine_dense(model, x, 0.1, statistic="variance")
    with pytest.raises(ValueError, match="'auto' needs a Task"):
        refine_dense(model, x, "auto")
    with pytest.raises(ValueError, match="pass epsilons"):
        refine_dense(model, _task(), "auto", statistic="std")
    with pytest.raises(ValueError, match="tolerance must be >= 0"):
        refine_dense(model, _task(), "auto", tolerance=-1.0)
    with pytest.raises(ValueError, match="loss_tolerance must be a number >= 0, 'auto' or None, got 'big'"):
        refine_dense(model, _task(), "auto", loss_tolerance="big")
    with pytest.raises(ValueError, match="confidence must be a finite number >= 0"):
        refine_dense(model, _task(), "auto", confidence=-1.0)
    with pytest.raises(TypeError, match="data must be an input tensor or a Task"):
        refine_dense(model, [[1.0] * 6], 0.1)


# --------------------------------------------------------------------------- pruning importance


def test_activation_std_importance_keeps_the_most_variable_units():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    scale = torch.tensor([0.1, 5.0, 0.01, 3.0, 0.5, 4.0, 0.2, 2.0])  # output std of each unit ~ scale
    with torch.no_grad():
        model[0].weight.copy_(torch.nn.functional.normalize(torch.randn(8, 4), dim=1) * scale[:, None])
    x = torch.randn(500, 4)
    importance = activation_std_importance(model, x)
    small = apply_policy(model, {"0": {"prune": 0.5}}, x[:1], importance=importance)
    with torch.no_grad():
        stds = model[0](x).std(dim=0)
    top = sorted(stds.argsort(descending=True)[:4].tolist())
    assert top == [1, 3, 5, 7]
    assert torch.equal(small[0].weight, model[0].weight[top])
    assert torch.equal(small[2].weight, model[2].weight[:, top])


def test_activation_std_importance_on_convolutions_is_per_channel():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 10, 2))
    with torch.no_grad():
        model[0].weight.mul_(torch.tensor([1.0, 0.0, 3.0, 0.1, 2.0, 0.0])[:, None, None])
    x = torch.randn(64, 1, 10)
    small = apply_policy(model, {"0": {"prune": 0.5}}, x[:1], importance=activation_std_importance(model, x))
    assert torch.equal(small[0].weight, model[0].weight[[0, 2, 4]])


# --------------------------------------------------------------------------- command line


def test_cli_refine_writes_the_refined_model_and_report(tmp_path):
    out = tmp_path / "refined"
    result = runner.invoke(cli.app, ["refine", "--zoo", "wine-mlp", "--epsilon", "0.6", "--retrain-epochs", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "body.0" in result.output and "% removed" in result.output
    saved = json.loads((out / "report.json").read_text())
    assert saved["report"]["epsilon"] == 0.6 and saved["model"] == "TabularMLP"
    model = TabularMLP(13, 3, hidden=saved["hidden"])
    model.load_state_dict(torch.load(out / "state_dict.pt", weights_only=True))
    assert count_cost(model, torch.randn(1, 13)).params == saved["report"]["params_after"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--zoo", "digits-cnn"], "'digits-cnn' is not one: 'features.0' is a Conv2d"),
        (["--zoo", "wine-mlp", "--epsilon", "-1"], "--epsilon must be a number >= 0 or 'auto', got '-1'"),
        (["--zoo", "wine-mlp", "--epsilon", "lots"], "--epsilon must be a number >= 0 or 'auto'"),
        (["--zoo", "wine-mlp", "--tolerance", "-2"], "--tolerance must be >= 0"),
        (["--zoo", "wine-mlp", "--statistic", "mean"], "unknown --statistic 'mean'; allowed: std"),
    ],
)
def test_cli_refine_bad_input(args, message):
    result = runner.invoke(cli.app, ["refine", *args])
    assert result.exit_code == 2
    assert message in result.output
    if "digits-cnn" in args:
        assert "Zoo MLPs: breast-cancer-mlp, wine-mlp, diabetes-mlp, tabular-mlp" in result.output


def test_refine_dense_is_exported():
    assert ac.refine_dense is refine_dense


def test_the_loss_gate_rejects_a_point_that_only_the_coarse_metric_passes():
    points = [SweepPoint(epsilon=e, params=100 - int(100 * e), hidden=[1], metric_before_retrain=90.0, metric=90.0,
                         loss=loss) for e, loss in ((0.3, 0.10), (0.5, 0.14), (0.7, 0.40))]
    assert choose_epsilon(points, 90.0, 0.5).epsilon == 0.7  # accuracy alone cannot tell them apart
    chosen = choose_epsilon(points, 90.0, 0.5, original_loss=0.10, loss_tolerance=0.05)
    assert chosen.epsilon == 0.5  # 0.7 lost confidence: its loss is 0.30 above the original's
    assert choose_epsilon(points, 90.0, 0.5, original_loss=0.01, loss_tolerance=0.05) is None


def test_the_confidence_gate_rejects_a_loss_gap_that_only_a_small_sample_hides():
    def point(epsilon, gap, se):
        return SweepPoint(epsilon=epsilon, params=100 - int(100 * epsilon), hidden=[1], metric_before_retrain=90.0,
                          metric=90.0, loss=0.1 + gap, loss_gap=gap, loss_gap_se=se)

    points = [point(0.3, 0.00, 0.01), point(0.5, 0.02, 0.01), point(0.7, 0.04, 0.02)]
    gate = {"original_loss": 0.1, "loss_tolerance": 0.05}
    assert choose_epsilon(points, 90.0, 0.5, **gate).epsilon == 0.7  # the mean gap alone: 0.04 <= 0.05
    assert choose_epsilon(points, 90.0, 0.5, **gate, confidence=1.0).epsilon == 0.5  # 0.04 + 0.02 > 0.05
    assert choose_epsilon(points, 90.0, 0.5, **gate, confidence=4.0).epsilon == 0.3  # 0.02 + 0.04 > 0.05
    assert choose_epsilon(points, 90.0, 0.5, **gate, confidence=6.0) is None  # 0.00 + 0.06 > 0.05


def test_sweep_points_carry_the_paired_loss_gap_to_the_original():
    model, task = _mlp(), _task()
    original_loss = evaluate_loss(model, task, "val")
    (same, _), (smaller, _) = sweep_epsilon(model, task, [0.0, 0.6], retrain_epochs=0)
    assert same.loss_gap == 0.0 and same.loss_gap_se == 0.0  # epsilon 0 without retraining: the original
    assert smaller.loss_gap == pytest.approx(smaller.loss - original_loss, abs=1e-6)  # mean of differences
    assert smaller.loss_gap_se > 0


def _regression_task(n: int = 240) -> Task:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=generator)
    y = (x[:, :1] - 0.5 * x[:, 1:2]) + 0.1 * torch.randn(n, 1, generator=generator)
    third = n // 3
    splits = (x[: 2 * third], y[: 2 * third]), (x[2 * third :], y[2 * third :])
    return Task("toy-regression", *splits, splits[1], metric="neg_rmse", loss="mse", batch_size=32)


def test_regression_gets_a_relative_loss_gate():
    """The MSE may exceed the original's by 2 % (plus the margin); a looser metric tolerance alone lets 0.3 through."""
    torch.manual_seed(0)
    model, task = TabularMLP(6, 1, hidden=(32, 24), batchnorm=False), _regression_task()
    train(model, task, epochs=20)
    model.eval()
    grid = {"retrain_epochs": 2, "epsilons": [0.0, 0.3, 0.5, 0.7, 0.9], "tolerance": 0.05}
    _, metric_only = refine_dense(model, task, "auto", loss_tolerance=None, **grid)
    assert metric_only.epsilon == 0.3 and metric_only.params_removed > 0.3
    _, gated = refine_dense(model, task, "auto", **grid)
    assert gated.loss_tolerance == pytest.approx(DEFAULT_REGRESSION_LOSS_TOLERANCE * gated.loss_original)
    assert gated.confidence == DEFAULT_CONFIDENCE
    rejected = next(p for p in gated.sweep if p.epsilon == 0.3)
    assert rejected.loss_gap > gated.loss_tolerance  # 2.4 % of the MSE worse: rejected
    assert gated.epsilon == 0.0 and gated.met_tolerance  # the retrained full-width model passes
