"""Task validation, the training loop, distillation, sequential freezing, evaluation and BN recalibration."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from torch import nn

from autocompress.finetune import evaluate_metric, recalibrate_batchnorm, resolve_device, train
from autocompress.task import Task
from autocompress.transforms.freezing import factor_phases
from autocompress.transforms.lowrank import LowRank, factorize
from autocompress.zoo.models import TabularMLP


def blobs_task(n: int = 256, batch_size: int = 32, seed: int = 0) -> Task:
    """Three Gaussian blobs in 4-D: easy, so a few epochs must cut the loss sharply."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    centers = torch.tensor([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 2.0, 0]])
    inputs = centers[labels] + 0.5 * torch.randn(n, 4, generator=gen)
    half = n // 2
    return Task(
        "blobs",
        (inputs[:half], labels[:half]),
        (inputs[half:], labels[half:]),
        batch_size=batch_size,
    )


def regression_task(n: int = 128) -> Task:
    gen = torch.Generator().manual_seed(1)
    inputs = torch.randn(n, 4, generator=gen)
    targets = inputs @ torch.tensor([[1.0], [-2.0], [0.5], [0.0]])
    return Task(
        "lin", (inputs, targets), (inputs[:32], targets[:32]), metric="neg_rmse", loss="mse"
    )


def mean_loss(model: nn.Module, task: Task) -> float:
    model.eval()
    with torch.no_grad():
        return float(task.loss_fn()(model(task.train[0]), task.train[1]))


# --- Task -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"train": (torch.zeros(4, 2), torch.zeros(3, dtype=torch.long))},
            ValueError,
            "4 inputs but 3 targets",
        ),
        (
            {"val": (torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))},
            ValueError,
            "val split is empty",
        ),
        (
            {"train": (torch.zeros(4, 2).numpy(), torch.zeros(4))},
            TypeError,
            "train inputs must be a torch.Tensor",
        ),
        ({"train": torch.zeros(4, 2)}, TypeError, "pair (inputs, targets)"),
        ({"val": None}, ValueError, "val split is required"),
        ({"metric": "f1"}, ValueError, "unknown metric 'f1'; allowed: accuracy, neg_rmse"),
        ({"loss": "hinge"}, ValueError, "unknown loss 'hinge'; allowed: cross_entropy, mse"),
        ({"metric": 3}, TypeError, "metric must be one of"),
        (
            {"val": (torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))},
            ValueError,
            "per-sample shape (3,)",
        ),
        ({"train": (torch.zeros(4, 2), torch.zeros(4))}, ValueError, "needs integer class labels"),
        ({"loss": "mse", "metric": "neg_rmse"}, ValueError, "'mse' needs floating-point targets"),
        ({"batch_size": 0}, ValueError, "batch_size must be a positive int"),
    ],
)
def test_task_validation_names_the_problem(kwargs: dict, error: type, message: str) -> None:
    base = {
        "name": "t",
        "train": (torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)),
        "val": (torch.zeros(2, 2), torch.zeros(2, dtype=torch.long)),
    }
    with pytest.raises(error, match=re.escape(message)):
        Task(**{**base, **kwargs})


def test_task_helpers_and_no_mutation() -> None:
    task = blobs_task()
    before = task.train[0].clone()
    example = task.example_input(3)
    example += 100.0
    assert torch.equal(task.train[0], before)
    assert example.shape == (3, 4)
    assert task.metric_name == "accuracy" and task.is_classification
    assert task.num_samples == {"train": 128, "val": 128}
    with pytest.raises(ValueError, match="has no test split"):
        task.loader("test")
    with pytest.raises(ValueError, match="unknown split 'dev'; allowed: train, val, test"):
        task.loader("dev")
    assert not regression_task().is_classification


def test_loader_shapes_and_seeded_order() -> None:
    task = blobs_task(n=200, batch_size=32)  # 100 training rows
    batches = list(task.loader("train", seed=3))
    assert [len(x) for x, _ in batches] == [32, 32, 32, 4]
    assert batches[0][0].shape == (32, 4) and batches[0][1].dtype == torch.long
    again = list(task.loader("train", seed=3))
    other = list(task.loader("train", seed=4))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again, strict=True))
    assert not torch.equal(batches[0][0], other[0][0])
    assert not torch.equal(batches[0][0], task.train[0][:32])  # train is shuffled by default
    val = next(iter(task.loader("val", batch_size=10)))
    assert torch.equal(val[0], task.val[0][:10])  # val is not
    assert len(list(task.loader("train", drop_last=True))) == 3


# --- train ------------------------------------------------------------------------------


def test_train_reduces_loss_and_is_deterministic() -> None:
    task = blobs_task()
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(TabularMLP(4, 3, hidden=(16,)))
    start_loss = mean_loss(models[0], task)
    rng_before = torch.random.get_rng_state()
    info = [train(m, task, epochs=20, lr=1e-2, seed=7) for m in models]
    assert torch.equal(rng_before, torch.random.get_rng_state())  # the caller's RNG is untouched
    assert info[0]["steps"] == 20 * 4  # 128 rows / 32 per batch, 20 epochs
    assert info[0]["final_loss"] < info[0]["first_loss"]
    assert mean_loss(models[0], task) < 0.3 * start_loss
    assert evaluate_metric(models[0], task, "val") > 90.0
    for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values(), strict=True):
        assert torch.equal(a, b)
    torch.manual_seed(0)
    third = TabularMLP(4, 3, hidden=(16,))
    train(third, task, epochs=20, lr=1e-2, seed=8)
    assert not torch.equal(third.head.weight, models[0].head.weight)


def test_train_budget_arguments() -> None:
    task = blobs_task()
    model = TabularMLP(4, 3, hidden=(8,))
    assert train(model, task, steps=3)["steps"] == 3
    assert train(model, task, epochs=0.5)["steps"] == 2
    assert train(model, task)["steps"] == 4  # default: one epoch
    with pytest.raises(ValueError, match="either epochs or steps, not both"):
        train(model, task, epochs=1, steps=1)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        train(model, task, steps=0)
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'"):
        train(model, task, optimizer="lbfgs")
    with pytest.raises(ValueError, match="needs a teacher"):
        train(model, task, distill_weight=0.5)
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no parameter with requires_grad"):
        train(model, task)


def test_train_only_updates_trainable_params_and_restores_modes() -> None:
    task = blobs_task()
    model = TabularMLP(4, 3, hidden=(8,))
    model.body[0].weight.requires_grad_(False)
    frozen = model.body[0].weight.clone()
    model.eval()
    train(model, task, steps=5, lr=1e-2, progress=True)
    assert torch.equal(model.body[0].weight, frozen)
    assert not model.training and not model.body[1].training


def factorized_mlp() -> nn.Module:
    """A blobs MLP whose hidden layer is a LowRank (SVD) pair; the head stays whole."""
    torch.manual_seed(0)
    model = TabularMLP(4, 3, hidden=(16,))
    model.body[0] = factorize(model.body[0], 0.5, name="body.0")
    assert isinstance(model.body[0], LowRank)
    return model


def weights(params: list[nn.Parameter]) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def test_sequential_freeze_keeps_each_phases_frozen_factors_unchanged() -> None:
    task = blobs_task()
    model = factorized_mlp()
    outer, inner = factor_phases(model)  # SVD: factor 0 outer, factor 1 inner
    factor_ids = {id(p) for p in outer + inner}
    others = [p for p in model.parameters() if id(p) not in factor_ids]
    assert outer and inner and others
    snapshots = []  # before each step (on_step runs after the freezing of that step)

    def record(step: int) -> None:
        snapshots.append((weights(outer), weights(inner), weights(others),
                          [p.requires_grad for p in outer], [p.requires_grad for p in inner]))

    info = train(model, task, steps=6, lr=1e-2, freeze="sequential", freeze_period=2, on_step=record)
    snapshots.append((weights(outer), weights(inner), weights(others), None, None))
    assert info["steps"] == 6 and len(snapshots) == 7

    def changed(before: list[torch.Tensor], after: list[torch.Tensor]) -> list[float]:
        return [float((a - b).abs().max()) for b, a in zip(before, after, strict=True)]

    for step in range(6):
        outer_frozen = (step // 2) % 2 == 0  # steps 0-1 and 4-5: outer frozen; 2-3: inner frozen
        (o0, i0, x0, o_grad, i_grad), (o1, i1, x1, *_) = snapshots[step], snapshots[step + 1]
        assert o_grad == [not outer_frozen] * len(outer) and i_grad == [outer_frozen] * len(inner)
        frozen, trained = (changed(o0, o1), changed(i0, i1)) if outer_frozen else (changed(i0, i1), changed(o0, o1))
        assert frozen == [0.0] * len(frozen), f"step {step}: a frozen factor moved by {frozen}"
        assert all(d > 1e-6 for d in trained), f"step {step}: a trained factor did not move: {trained}"
        assert all(d > 1e-6 for d in changed(x0, x1)), f"step {step}: the head did not train"
    assert all(p.requires_grad for p in outer + inner)  # every factor trainable again afterwards


def test_freeze_off_trains_exactly_as_before_and_without_factors_sequential_changes_nothing() -> None:
    task = blobs_task()
    runs = {}
    for mode in ("default", "none", "sequential"):
        model = factorized_mlp()
        log = train(model, task, steps=8, lr=1e-2, seed=3) if mode == "default" else \
            train(model, task, steps=8, lr=1e-2, seed=3, freeze=mode)
        runs[mode] = (model.state_dict(), log["final_loss"])
    for key, value in runs["default"][0].items():
        assert torch.equal(value, runs["none"][0][key])  # same seed, option off: the same weights
    assert runs["default"][1] == runs["none"][1]
    assert not torch.equal(runs["default"][0]["body.0.0.weight"], runs["sequential"][0]["body.0.0.weight"])
    plain = []
    for mode in ("none", "sequential"):  # no LowRank layer: nothing to freeze, the same training
        torch.manual_seed(0)
        plain.append(TabularMLP(4, 3, hidden=(16,)))
        train(plain[-1], task, steps=5, seed=3, freeze=mode)
    for a, b in zip(plain[0].state_dict().values(), plain[1].state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_bad_freeze_values_name_the_allowed_ones() -> None:
    task, model = blobs_task(), factorized_mlp()
    with pytest.raises(ValueError, match="unknown freeze 'alternate'; allowed: none, sequential"):
        train(model, task, steps=1, freeze="alternate")
    for period in (0, 1.5, True):
        with pytest.raises(ValueError, match="freeze_period must be a positive int"):
            train(model, task, steps=1, freeze="sequential", freeze_period=period)


@pytest.mark.parametrize("make_task", [blobs_task, regression_task])
def test_distillation_from_an_identical_teacher_has_zero_kd(make_task) -> None:
    task = make_task()
    out = 3 if task.is_classification else 1
    student = TabularMLP(4, out, hidden=(16,), batchnorm=False)
    teacher = copy.deepcopy(student)
    info = train(student, task, steps=4, lr=0.0, teacher=teacher, distill_weight=1.0)
    assert info["final_loss"] == pytest.approx(0.0, abs=1e-6)
    other = TabularMLP(4, out, hidden=(16,), batchnorm=False)
    assert (
        train(student, task, steps=4, lr=0.0, teacher=other, distill_weight=1.0)["final_loss"]
        > 1e-3
    )


def test_distillation_leaves_teacher_unchanged() -> None:
    task = blobs_task()
    teacher = TabularMLP(4, 3, hidden=(16,))
    train(teacher, task, epochs=20, lr=1e-2)
    teacher.train()
    snapshot = copy.deepcopy(teacher.state_dict())
    student = TabularMLP(4, 3, hidden=(8,))
    train(student, task, epochs=20, lr=1e-2, teacher=teacher, distill_weight=0.5, temperature=2.0)
    assert teacher.training  # mode restored
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, snapshot[key]), key  # weights and BN buffers untouched
    assert evaluate_metric(student, task) > 90.0


# --- evaluate_metric / resolve_device ----------------------------------------------------


def test_evaluate_metric_on_known_outputs() -> None:
    inputs = torch.eye(4).repeat(5, 1)  # 20 one-hot rows: identity predicts class i for row i % 4
    targets = torch.arange(20) % 4
    targets[:5] = (targets[:5] + 1) % 4  # 5 of 20 wrong
    task = Task("known", (inputs, targets), (inputs, targets), batch_size=6)
    model = nn.Sequential(nn.Identity(), nn.Dropout(0.9))
    assert evaluate_metric(model, task, "val") == pytest.approx(75.0)
    assert model.training  # mode restored
    reg = Task("reg", (inputs, inputs), (inputs, inputs + 0.5), metric="neg_rmse", loss="mse")
    assert evaluate_metric(nn.Identity(), reg) == pytest.approx(-0.5)


def test_resolve_device() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


# --- recalibrate_batchnorm ---------------------------------------------------------------


def bn_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(4, 3), nn.Dropout(0.5), nn.BatchNorm1d(3, momentum=0.3), nn.ReLU()
    )


@pytest.mark.parametrize("batches", [1, 3])
def test_recalibrate_batchnorm_matches_hand_computed_stats(batches: int) -> None:
    task = blobs_task(n=192, batch_size=32)  # 96 training rows = 3 batches
    model = bn_model()
    model.train()
    model[0].eval()  # a mixed-mode model: every flag must come back as it was
    assert recalibrate_batchnorm(model, task, batches=batches, seed=5) == 1
    assert model.training and not model[0].training and model[1].training and model[2].training
    bn = model[2]
    assert bn.momentum == 0.3 and int(bn.num_batches_tracked) == batches
    # by hand: linear outputs of the same seeded batches (dropout off); per-batch mean and unbiased
    # variance, averaged with equal weight (momentum=None)
    with torch.no_grad():
        seen = [model[0](x) for x, _ in task.loader("train", seed=5)][:batches]
    mean = torch.stack([h.mean(0) for h in seen]).mean(0)
    var = torch.stack([h.var(0, unbiased=True) for h in seen]).mean(0)
    torch.testing.assert_close(bn.running_mean, mean)
    torch.testing.assert_close(bn.running_var, var)


def test_recalibrate_batchnorm_single_batch_is_the_data_statistics() -> None:
    task = blobs_task(n=192, batch_size=96)
    model = bn_model().eval()
    recalibrate_batchnorm(model, task, batches=10)
    with torch.no_grad():
        hidden = model[0](task.train[0])
    torch.testing.assert_close(model[2].running_mean, hidden.mean(0))
    torch.testing.assert_close(model[2].running_var, hidden.var(0, unbiased=True))
    assert not any(m.training for m in model.modules())


def test_recalibrate_batchnorm_without_bn_is_a_no_op() -> None:
    model = TabularMLP(4, 3, hidden=(8,), batchnorm=False)
    before = copy.deepcopy(model.state_dict())
    assert recalibrate_batchnorm(model, blobs_task()) == 0
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="batches must be >= 1"):
        recalibrate_batchnorm(model, blobs_task(), batches=0)
