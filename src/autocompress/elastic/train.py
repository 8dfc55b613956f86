"""Training an elastic supernet once (the sandwich rule) and measuring its sub-networks.

Each step runs the largest sub-network, the smallest and ``sandwich`` random ones on the same
batch and sums their gradients (BigNAS / OFA's sandwich rule); the others also learn from the
largest one's soft outputs (in-place distillation, weight ``distill``). A sub-network's metric
is measured on its extracted model after re-estimating BatchNorm statistics on training batches.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from autocompress.elastic.supernet import ElasticModel, SubnetConfig
from autocompress.finetune import (
    budget_steps,
    evaluate_metric,
    recalibrate_batchnorm,
    seeded_training,
    training_batches,
)
from autocompress.task import Task


def train_supernet(
    supernet: ElasticModel,
    task: Task,
    *,
    epochs: float = 10.0,
    lr: float = 3e-3,
    sandwich: int = 2,
    distill: float = 0.5,
    seed: int = 0,
) -> dict[str, float]:
    """Train ``supernet`` in place with the sandwich rule (Adam, cosine decay); returns steps, seconds, final loss."""
    if sandwich < 0 or not 0 <= distill <= 1:
        raise ValueError(f"need sandwich >= 0 and distill in [0, 1], got {sandwich}, {distill}")
    total = budget_steps(task, epochs, None)
    rng = np.random.default_rng([seed, 3])
    opt = torch.optim.Adam(supernet.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 * (1.0 + math.cos(math.pi * step / total)))
    loss_fn = task.loss_fn()
    start, losses = time.perf_counter(), []
    supernet.train()
    with seeded_training(seed, torch.device("cpu")):
        for inputs, targets in training_batches(task, seed, total):
            opt.zero_grad(set_to_none=True)
            configs = [supernet.largest(), supernet.smallest(), *(supernet.random(rng) for _ in range(sandwich))]
            teacher = None
            for index, config in enumerate(configs):
                outputs = supernet(inputs, config)
                loss = loss_fn(outputs, targets)
                if index == 0:
                    teacher = outputs.detach()
                    losses.append(float(loss.detach()))
                elif distill > 0:
                    kd = F.kl_div(F.log_softmax(outputs, 1), F.softmax(teacher, 1), reduction="batchmean")
                    loss = (1 - distill) * loss + distill * kd
                loss.backward()
            opt.step()
            schedule.step()
    supernet.eval()
    tail = losses[-10:]
    return {"steps": total, "seconds": time.perf_counter() - start, "final_loss": sum(tail) / len(tail)}


def subnet_metric(supernet: ElasticModel, config: SubnetConfig, task: Task, split: str = "val", *,
                  bn_batches: int = 20, seed: int = 0) -> tuple[float, nn.Module]:
    """The task metric of ``config``'s extracted model (BN statistics re-estimated), and that model."""
    model = supernet.extract(config)
    recalibrate_batchnorm(model, task, batches=bn_batches, seed=seed)
    return evaluate_metric(model, task, split), model
