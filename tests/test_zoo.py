"""Bundled datasets, architectures (hand-counted parameters) and the pretrained-weights cache."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from autocompress.finetune import evaluate_metric
from autocompress.zoo import ZooModel, datasets, list_tasks, list_zoo, load_task, load_zoo, registry
from autocompress.zoo.models import (
    DepthwiseSeparableBlock,
    DigitsCNN,
    Mnist1dCNN,
    Mnist1dResNetDW,
    TabularMLP,
)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv(c_in: int, c_out: int, k: int, bias: bool = True, groups: int = 1) -> int:
    return c_out * (c_in // groups) * k + (c_out if bias else 0)


def bn(c: int) -> int:
    return 2 * c


def linear(i: int, o: int) -> int:
    return i * o + o


def test_names_and_unknown_names() -> None:
    assert list_zoo() == [
        "mnist1d-cnn",
        "mnist1d-resnet",
        "digits-cnn",
        "breast-cancer-mlp",
        "wine-mlp",
        "diabetes-mlp",
        "tabular-mlp",
    ]
    assert list_tasks() == ["mnist1d", "digits", "breast_cancer", "wine", "diabetes"]
    with pytest.raises(
        ValueError, match="unknown zoo model 'resnet50'; allowed: mnist1d-cnn, mnist1d-resnet"
    ):
        load_zoo("resnet50")
    with pytest.raises(ValueError, match="unknown task 'cifar10'; allowed: mnist1d, digits"):
        load_task("cifar10")


# --- architectures ----------------------------------------------------------------------


def test_parameter_counts_by_hand() -> None:
    cnn = (
        conv(1, 32, 5) + bn(32) + conv(32, 64, 5) + bn(64)
        + conv(64, 128, 3) + bn(128) + conv(128, 128, 3) + bn(128)
        + linear(128 * 10, 256) + linear(256, 10)
    )  # fmt: skip
    assert cnn == 415_690
    assert n_params(Mnist1dCNN()) == cnn
    mlp = linear(13, 256) + bn(256) + linear(256, 256) + bn(256) + linear(256, 3)
    assert mlp == 71_171
    assert n_params(TabularMLP(13, 3)) == mlp
    assert n_params(TabularMLP(10, 1, hidden=(8,), batchnorm=False)) == linear(10, 8) + linear(8, 1)
    digits = (
        conv(1, 16, 9)
        + bn(16)
        + conv(16, 32, 9)
        + bn(32)
        + conv(32, 64, 9)
        + bn(64)
        + linear(256, 10)
    )
    assert n_params(DigitsCNN()) == digits == 26_090

    def block(c_in: int, c_out: int, projection: bool) -> int:
        main = (
            conv(c_in, c_in, 3, False, groups=c_in)
            + bn(c_in)
            + conv(c_in, c_out, 1, False)
            + bn(c_out)
        )
        return main + (conv(c_in, c_out, 1, False) + bn(c_out) if projection else 0)

    resnet = (
        conv(1, 32, 5, False) + bn(32)
        + 2 * block(32, 32, False)
        + block(32, 64, True) + block(64, 64, False)
        + block(64, 128, True) + block(128, 128, False)
        + linear(128, 10)
    )  # fmt: skip
    assert n_params(Mnist1dResNetDW()) == resnet == 47_562
    wide = linear(30, 512) + linear(512, 512) + linear(512, 2)  # tabular-mlp: no BatchNorm
    assert wide == 279_554
    assert n_params(load_zoo("tabular-mlp", pretrained=False).model) == wide


@pytest.mark.parametrize(
    ("model", "input_shape", "output_shape"),
    [
        (Mnist1dCNN(), (5, 1, 40), (5, 10)),
        (Mnist1dResNetDW(), (5, 1, 40), (5, 10)),
        (DigitsCNN(), (5, 1, 8, 8), (5, 10)),
        (TabularMLP(30, 2, dropout=0.1), (5, 30), (5, 2)),
    ],
)
def test_forward_shape_and_fx_trace(
    model: nn.Module, input_shape: tuple, output_shape: tuple
) -> None:
    model.eval()
    x = torch.randn(input_shape)
    out = model(x)
    assert out.shape == output_shape
    traced = torch.fx.symbolic_trace(model)
    torch.testing.assert_close(traced(x), out)


def test_resnet_has_coupled_channels() -> None:
    model = Mnist1dResNetDW()
    blocks = [m for m in model.modules() if isinstance(m, DepthwiseSeparableBlock)]
    assert len(blocks) == 6
    assert all(
        b.depthwise.groups == b.depthwise.in_channels == b.depthwise.out_channels for b in blocks
    )
    identity = [b for b in blocks if isinstance(b.shortcut, nn.Identity)]
    projected = [b for b in blocks if not isinstance(b.shortcut, nn.Identity)]
    assert len(identity) == 4 and len(projected) == 2
    assert all(b.depthwise.stride == (2,) and b.shortcut[0].stride == (2,) for b in projected)


def test_torch_pruning_removes_coupled_channels() -> None:
    tp = pytest.importorskip("torch_pruning")
    model = Mnist1dResNetDW().eval()
    example = torch.randn(1, 1, 40)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    group = graph.get_pruning_group(model.stem[0], tp.prune_conv_out_channels, idxs=[0, 1, 2, 3])
    group.prune()
    # stem, both stage-0 blocks (depthwise, pointwise outputs) and stage-1 inputs shrink together
    assert model.stem[0].out_channels == 28
    assert model.blocks[0].depthwise.groups == 28 and model.blocks[1].pointwise.out_channels == 28
    assert model.blocks[2].shortcut[0].in_channels == 28
    assert model(example).shape == (1, 10)


# --- datasets ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "total", "sample_shape", "classes"),
    [
        ("digits", 1797, (1, 8, 8), 10),
        ("breast_cancer", 569, (30,), 2),
        ("wine", 178, (13,), 3),
        ("diabetes", 442, (10,), None),
    ],
)
def test_sklearn_tasks(name: str, total: int, sample_shape: tuple, classes: int | None) -> None:
    task = load_task(name, seed=0)
    sizes = task.num_samples
    assert sum(sizes.values()) == total
    assert sizes["train"] == pytest.approx(0.7 * total, abs=1)
    assert sizes["val"] == pytest.approx(0.15 * total, abs=1)
    x_train, y_train = task.train
    assert x_train.shape[1:] == sample_shape and x_train.dtype == torch.float32
    if classes is None:
        assert (
            task.loss == "mse"
            and task.metric == "neg_rmse"
            and y_train.shape == (sizes["train"], 1)
        )
        torch.testing.assert_close(y_train.mean(), torch.tensor(0.0), atol=1e-5, rtol=0)
    else:
        assert (
            task.loss == "cross_entropy"
            and task.metric == "accuracy"
            and y_train.dtype == torch.long
        )
        train_share = torch.bincount(y_train, minlength=classes) / len(y_train)
        val_share = torch.bincount(task.val[1], minlength=classes) / len(task.val[1])
        assert (train_share - val_share).abs().max() <= 1.0 / len(task.val[1])  # stratified
    if name == "digits":
        assert x_train.min() == 0.0 and x_train.max() == 1.0
    else:  # standardized with training statistics
        torch.testing.assert_close(x_train.mean(0), torch.zeros(sample_shape), atol=1e-5, rtol=0)
        torch.testing.assert_close(
            x_train.std(0, unbiased=False), torch.ones(sample_shape), atol=1e-4, rtol=0
        )
    again = load_task(name, seed=0)
    assert torch.equal(again.train[0], x_train) and torch.equal(again.test[1], task.test[1])
    assert not torch.equal(load_task(name, seed=1).train[0], x_train)


def test_mnist1d_task_is_generated_once_and_cached(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datasets, "MNIST1D_NUM_SAMPLES", 300)  # 240 train / 60 test
    monkeypatch.setattr(datasets, "MNIST1D_VAL_SAMPLES", 40)
    np.random.seed(123)
    random.seed(123)
    expected_np, expected_py = np.random.rand(), random.random()
    np.random.seed(123)
    random.seed(123)
    task = load_task("mnist1d", seed=0)
    assert (np.random.rand(), random.random()) == (
        expected_np,
        expected_py,
    )  # global RNGs untouched
    assert task.num_samples == {"train": 200, "val": 40, "test": 60}
    assert task.train[0].shape == (200, 1, 40) and task.train[0].dtype == torch.float32
    assert set(torch.unique(task.val[1]).tolist()) <= set(range(10))
    assert list((cache / "datasets").glob("*.npz")) and not list((cache / "datasets").glob("*.tmp"))

    import mnist1d.data

    def no_generation(*args: object, **kwargs: object) -> None:
        raise AssertionError("MNIST-1D regenerated instead of read from the cache")

    monkeypatch.setattr(mnist1d.data, "make_dataset", no_generation)
    again = load_task("mnist1d", seed=0)
    assert torch.equal(again.train[0], task.train[0]) and torch.equal(again.test[1], task.test[1])
    other_split = load_task("mnist1d", seed=1)
    assert torch.equal(other_split.test[0], task.test[0])  # the test split is fixed
    assert not torch.equal(other_split.val[0], task.val[0])


# --- registry and cache -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "outputs"), [("digits-cnn", 10), ("breast-cancer-mlp", 2), ("diabetes-mlp", 1), ("tabular-mlp", 2)]
)
def test_random_init_is_seeded(cache: Path, name: str, outputs: int) -> None:
    first = load_zoo(name, pretrained=False, seed=3)
    second = load_zoo(name, pretrained=False, seed=3)
    other = load_zoo(name, pretrained=False, seed=4)
    assert isinstance(first, ZooModel) and first.source == "random" and first.description
    assert first.example_input.shape[0] == 1 and not first.model.training
    assert first.model(first.example_input).shape == (1, outputs)
    weights = [next(iter(z.model.parameters())) for z in (first, second, other)]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])
    assert not (cache / "zoo").exists()


def test_pretrained_cache_round_trip(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trained = load_zoo("wine-mlp", pretrained=True, seed=0)
    assert trained.source == "trained" and trained.train_info["steps"] > 0
    files = list((cache / "zoo").iterdir())
    assert [f.name for f in files] == [registry.weights_path("wine-mlp", 0).name]
    assert files[0].name.startswith("wine-mlp-seed0-" + registry.RECIPE_VERSION)

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("retrained instead of reading the cache")

    monkeypatch.setattr(registry, "train", no_training)
    cached = load_zoo("wine-mlp", pretrained=True, seed=0)
    assert cached.source == "cache"
    for key, value in trained.model.state_dict().items():
        assert torch.equal(value, cached.model.state_dict()[key]), key
    assert evaluate_metric(cached.model, cached.task, "test") > 85.0  # chance is ~40%


def test_corrupt_cache_is_retrained(cache: Path) -> None:
    path = registry.weights_path("wine-mlp", 1)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="ignoring unusable zoo cache file"):
        zoo = load_zoo("wine-mlp", seed=1)
    assert zoo.source == "trained"
    assert load_zoo("wine-mlp", seed=1).source == "cache"
