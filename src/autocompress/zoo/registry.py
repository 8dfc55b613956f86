"""The model zoo: named (architecture, task, training recipe) entries, trained on first use."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from autocompress.finetune import train
from autocompress.task import Task
from autocompress.zoo.datasets import atomic_write, cache_dir, load_task
from autocompress.zoo.models import DigitsCNN, Mnist1dCNN, Mnist1dResNetDW, TabularMLP

__all__ = [
    "RECIPE_VERSION",
    "ZOO",
    "Recipe",
    "ZooEntry",
    "ZooModel",
    "list_zoo",
    "load_zoo",
    "weights_path",
]

RECIPE_VERSION = "v1"  # bump when the training procedure changes in a way the Recipe does not show


@dataclass(frozen=True)
class Recipe:
    """How a zoo entry is pretrained (Adam + cosine decay, see :func:`autocompress.finetune.train`)."""

    epochs: float
    lr: float
    batch_size: int
    weight_decay: float = 0.0
    optimizer: str = "adam"


@dataclass(frozen=True)
class ZooEntry:
    """A zoo entry: which task, how to build the model for it, how to train it."""

    task: str
    build: Callable[[Task], nn.Module]
    recipe: Recipe
    description: str


@dataclass
class ZooModel:
    """A loaded zoo entry. ``source`` is "random", "trained" (just now) or "cache"."""

    name: str
    model: nn.Module
    task: Task
    example_input: Tensor
    description: str
    source: str = "random"
    train_info: dict = field(default_factory=dict)


def _outputs(task: Task) -> int:
    """A tabular model's outputs: one per class, or per regression target."""
    return int(task.train[1].max()) + 1 if task.is_classification else task.train[1].shape[1]


def _tabular(task: Task) -> nn.Module:
    return TabularMLP(task.train[0].shape[1], _outputs(task))


def _wide_dense(task: Task) -> nn.Module:
    """ODF2NNA's starting point: a wide plain dense network (Linear+ReLU, no BatchNorm), 512 x 512."""
    return TabularMLP(task.train[0].shape[1], _outputs(task), hidden=(512, 512), batchnorm=False)


ZOO: dict[str, ZooEntry] = {
    "mnist1d-cnn": ZooEntry(
        "mnist1d",
        lambda task: Mnist1dCNN(),
        Recipe(epochs=4, lr=3e-3, batch_size=128, weight_decay=1e-2, optimizer="adamw"),
        "MNIST-1D, 4-conv CNN (Conv1d+BN+ReLU, 2 max-pools) + 2 Linear",
    ),
    "mnist1d-resnet": ZooEntry(
        "mnist1d",
        lambda task: Mnist1dResNetDW(),
        Recipe(epochs=5, lr=3e-3, batch_size=128),
        "MNIST-1D, residual net of depthwise-separable Conv1d blocks (coupled channels)",
    ),
    "digits-cnn": ZooEntry(
        "digits",
        lambda task: DigitsCNN(),
        Recipe(epochs=15, lr=3e-3, batch_size=64),
        "sklearn 8x8 digits, 3-conv CNN (Conv2d+BN+ReLU) + Linear",
    ),
    "breast-cancer-mlp": ZooEntry(
        "breast_cancer",
        _tabular,
        Recipe(epochs=30, lr=1e-3, batch_size=64),
        "sklearn breast cancer, MLP 30-256-256-2 (Linear+BN+ReLU)",
    ),
    "wine-mlp": ZooEntry(
        "wine",
        _tabular,
        Recipe(epochs=30, lr=1e-3, batch_size=32),
        "sklearn wine, MLP 13-256-256-3 (Linear+BN+ReLU)",
    ),
    "diabetes-mlp": ZooEntry(
        "diabetes",
        _tabular,
        Recipe(epochs=10, lr=1e-3, batch_size=32),
        "sklearn diabetes regression, MLP 10-256-256-1 (Linear+BN+ReLU), MSE",
    ),
    "tabular-mlp": ZooEntry(
        "breast_cancer",
        _wide_dense,
        Recipe(epochs=30, lr=1e-3, batch_size=64),
        "sklearn breast cancer, wide dense MLP 30-512-512-2 (Linear+ReLU, no BN): ODF2NNA's setting",
    ),
}


def list_zoo() -> list[str]:
    """Names accepted by :func:`load_zoo`."""
    return list(ZOO)


def weights_path(name: str, seed: int = 0) -> Path:
    """Cache file of the pretrained weights of ``name`` for ``seed``."""
    entry = _entry(name)
    task = load_task(entry.task, seed=seed)
    return _weights_path(name, seed, _build(entry, task, seed), task)


def _weights_path(name: str, seed: int, model: nn.Module, task: Task) -> Path:
    """Keyed by name, seed, RECIPE_VERSION and a hash of the recipe, the parameter shapes and the
    training data, so changing any of them never loads stale weights."""
    digest = hashlib.sha256(repr(_entry(name).recipe).encode())
    for key, value in sorted(model.state_dict().items()):
        digest.update(f"{key}:{tuple(value.shape)}".encode())
    for tensor in task.train:
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return cache_dir() / "zoo" / f"{name}-seed{seed}-{RECIPE_VERSION}-{digest.hexdigest()[:10]}.pt"


def load_zoo(
    name: str, *, pretrained: bool = True, seed: int = 0, progress: bool = False
) -> ZooModel:
    """Build zoo entry ``name`` (seeded init and data split); with ``pretrained``, its trained weights.

    Weights are trained with the entry's recipe on first use and cached under
    ``$AUTOCOMPRESS_CACHE`` (default ``~/.cache/autocompress``). The model is returned in eval mode.
    """
    entry = _entry(name)
    task = load_task(entry.task, seed=seed)
    task.batch_size = entry.recipe.batch_size
    model = _build(entry, task, seed)
    source, info = "random", {}
    if pretrained:
        path = _weights_path(name, seed, model, task)
        if _load_cached(model, path):
            source = "cache"
        else:
            model = _build(entry, task, seed)  # a failed load may have half-filled it
            recipe = entry.recipe
            info = train(
                model,
                task,
                epochs=recipe.epochs,
                lr=recipe.lr,
                weight_decay=recipe.weight_decay,
                optimizer=recipe.optimizer,
                seed=seed,
                progress=progress,
            )
            weights = {key: value.detach().cpu() for key, value in model.state_dict().items()}
            atomic_write(path, lambda tmp: torch.save(weights, tmp))
            source = "trained"
    model.eval()
    return ZooModel(name, model, task, task.example_input(1), entry.description, source, info)


def _build(entry: ZooEntry, task: Task, seed: int) -> nn.Module:
    """The entry's model, initialized from ``seed`` (the global RNG state is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return entry.build(task)


def _entry(name: str) -> ZooEntry:
    if name not in ZOO:
        raise ValueError(f"unknown zoo model {name!r}; allowed: {', '.join(ZOO)}")
    return ZOO[name]


def _load_cached(model: nn.Module, path: Path) -> bool:
    """Load cached weights into ``model``; False when absent or unusable (then it is retrained)."""
    if not path.exists():
        return False
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as err:  # any unreadable or mismatched cache file is just retrained
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        warnings.warn(
            f"ignoring unusable zoo cache file {path} ({reason}); retraining", stacklevel=3
        )
        return False
    return True
