"""Task.from_loaders: splits streamed from the user's loaders, dict batches, hooks, bounded memory, bad batches."""

from __future__ import annotations

import resource

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, RandomSampler, TensorDataset

from autocompress import BatchError, Evaluator, Policy, Task
from autocompress.finetune import evaluate_loss, evaluate_metric, train


def _data(n: int = 300, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 2] > 1).long()


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 3))


def _loader(x: torch.Tensor, y: torch.Tensor, shuffle: bool = False, batch_size: int = 32) -> DataLoader:
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle)


def test_streamed_metric_and_loss_equal_the_whole_split_computed_by_hand():
    x, y = _data()
    model = _mlp()
    streamed = Task.from_loaders(_loader(x, y, shuffle=True), _loader(x[:100], y[:100]), _loader(x[100:250], y[100:250]))
    with torch.no_grad():
        logits = model(x[100:250])
    by_hand = float((logits.argmax(1) == y[100:250]).double().mean() * 100)
    assert evaluate_metric(model, streamed, "test") == pytest.approx(by_hand, abs=1e-9)
    assert evaluate_loss(model, streamed, "test") == pytest.approx(float(F.cross_entropy(logits, y[100:250])), rel=1e-6)
    in_memory = Task("m", train=(x, y), val=(x[:100], y[:100]), test=(x[100:250], y[100:250]))
    assert evaluate_metric(model, in_memory, "test") == pytest.approx(by_hand, abs=1e-9)
    assert streamed.num_samples == {"train": 300, "val": 100, "test": 150}
    assert streamed.batch_size == 32 and streamed.steps_per_epoch() == 10


def test_training_passes_are_seeded_and_reshuffled_each_epoch():
    x, y = _data()
    task = Task.from_loaders(_loader(x, y, shuffle=True), _loader(x[:64], y[:64]))
    first = [b[1].clone() for b in task.loader("train", seed=3)]
    again = Task.from_loaders(_loader(x, y, shuffle=True), _loader(x[:64], y[:64]))
    assert all(torch.equal(a, b) for a, b in zip(first, [b[1] for b in again.loader("train", seed=3)], strict=True))
    pass_ = task.loader("train", seed=3)
    one, two = [b[1].clone() for b in pass_], [b[1].clone() for b in pass_]
    assert not all(torch.equal(a, b) for a, b in zip(one, two, strict=True))  # a new order each epoch
    a, b = _mlp(), _mlp()
    train(a, task, steps=25, seed=1)
    train(b, again, steps=25, seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


class Tokens(Dataset):
    """Dict samples as a tokenizer gives them, with a key the model does not take."""

    def __init__(self, n: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, 50, (n, 12), generator=g)
        self.labels = (self.ids[:, 0] > 25).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(12, dtype=torch.long),
                "token_type_ids": torch.zeros(12, dtype=torch.long), "labels": self.labels[i]}


class KeywordModel(nn.Module):
    """A model called with keywords that returns a dict (like a ``transformers`` model)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(50, 16)
        self.hidden = nn.Linear(16, 32)
        self.head = nn.Linear(32, 2)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
        h = (self.embed(input_ids) * attention_mask.unsqueeze(-1)).mean(1)
        return {"logits": self.head(torch.relu(self.hidden(h))), "hidden": h}


def test_dict_batches_reach_a_keyword_model_without_the_keys_it_does_not_take():
    task = Task.from_loaders(DataLoader(Tokens(96), batch_size=16, shuffle=True), DataLoader(Tokens(48, 1), batch_size=16))
    model = KeywordModel()
    inputs, targets = task.first_batch("val")
    assert set(inputs) == {"input_ids", "attention_mask", "token_type_ids"} and targets.shape == (16,)
    result = Evaluator(task, finetune_steps=12, output="logits", device="cpu").evaluate(model, Policy())
    data = Tokens(48, 1)
    with torch.no_grad():
        logits = model(data.ids, torch.ones_like(data.ids))["logits"]
    assert result.metric_original == pytest.approx(float((logits.argmax(1) == data.labels).double().mean() * 100))
    assert result.finetune["steps"] == 12 and result.metric_after_finetune is not None


def test_hooks_replace_the_training_step_and_the_evaluation():
    x, y = _data()
    seen = {"steps": 0, "evaluations": 0}

    def train_step(model: nn.Module, batch: list) -> torch.Tensor:
        seen["steps"] += 1
        inputs, targets = batch
        return F.cross_entropy(model(inputs), targets) + 0.0 * sum(p.sum() for p in model.parameters())

    def evaluate(model: nn.Module, loader: DataLoader) -> float:
        seen["evaluations"] += 1
        assert not model.training
        return 42.0

    task = Task.from_loaders(_loader(x, y, True), _loader(x[:64], y[:64]), train_step=train_step, evaluate=evaluate)
    model = _mlp()
    before = [p.clone() for p in model.parameters()]
    train(model, task, steps=7)
    assert seen["steps"] == 7 and any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert evaluate_metric(model, task) == 42.0 and seen["evaluations"] == 1


class Generated(Dataset):
    """A billion samples of 3x32x32 (12 TB as float32), each made from its index when asked for."""

    def __init__(self) -> None:
        self.reads = 0

    def __len__(self) -> int:
        return 10**9

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.reads += 1
        g = torch.Generator().manual_seed(int(i))
        x = torch.randn(3, 32, 32, generator=g)
        return x, (x.mean() > 0).long()


def test_a_dataset_far_larger_than_memory_trains_and_evaluates_in_bounded_memory():
    data = Generated()
    val = torch.utils.data.Subset(Generated(), range(512))
    # shuffle=True would draw a permutation of all 10**9 indices (8 GB): sampling with replacement streams
    sampler = RandomSampler(data, replacement=True)
    task = Task.from_loaders(DataLoader(data, batch_size=32, sampler=sampler), DataLoader(val, batch_size=64))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    result = Evaluator(task, finetune_steps=60, bn_batches=2, device="cpu").evaluate(model, Policy())
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) / 1024
    assert grown_mib < 300, f"memory grew by {grown_mib:.0f} MiB"
    assert data.reads <= 32 * (60 + 2 + 8 + 2)  # 60 steps, BN and calibration batches, the example: never a split
    assert task.num_samples["train"] == 10**9 and result.finetune["steps"] == 60
    assert 0.0 <= result.metric <= 100.0


class Endless(IterableDataset):
    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        while True:
            x = torch.randn(6, generator=g)
            yield x, (x[0] > 0).long()


def test_a_loader_without_a_length_needs_a_budget_in_steps():
    x, y = _data()
    task = Task.from_loaders(DataLoader(Endless(), batch_size=16), _loader(x[:64], y[:64]))
    with pytest.raises(ValueError, match="has no length.*finetune_steps"):
        Evaluator(task, finetune_epochs=1.0, device="cpu").evaluate(_mlp(), Policy())
    assert Evaluator(task, finetune_steps=5, device="cpu").evaluate(_mlp(), Policy()).finetune["steps"] == 5


def test_bad_loaders_and_batches_get_errors_naming_the_problem():
    x, y = _data()
    val = _loader(x[:64], y[:64])
    with pytest.raises(TypeError, match="one-shot iterator"):
        Task.from_loaders(iter(_loader(x, y)), val)
    with pytest.raises(TypeError, match="train must be a DataLoader"):
        Task.from_loaders(x, val)
    with pytest.raises(BatchError, match="targets under one of labels"):
        Task.from_loaders([{"input_ids": torch.zeros(4, 3)}], val)
    with pytest.raises(BatchError, match="disagree on the batch size"):
        Task.from_loaders([(torch.zeros(4, 6), torch.zeros(3, dtype=torch.long))], val)
    with pytest.raises(BatchError, match="cross_entropy' needs integer class labels"):
        Task.from_loaders(_loader(x, y.float()), val)
    batches = [(x[:8], y[:8]), (x[8:16], y[8:16]), (x[16:24].double(), y[16:24])]  # batch 2: float64 inputs
    task = Task.from_loaders(batches, val)
    with pytest.raises(BatchError, match=r"batch 2 of the train loader differs .*torch.float64"):
        train(_mlp(), task, steps=3)
    with pytest.raises(BatchError, match="the val loader differs"):
        Task.from_loaders(_loader(x, y), _loader(x[:64, :, None], y[:64]))
    with pytest.raises(TypeError, match="never holds one in memory"):
        task.split("val")
