"""Module-level functions a YAML search configuration can name (``elastic:`` / ``task:``): a small digits supernet."""

from __future__ import annotations

import functools

import torch
from torch import nn

from autocompress.elastic import ElasticCNN2d, train_supernet
from autocompress.task import Task
from autocompress.threads import single_threaded
from autocompress.zoo import load_task


@functools.cache
def digits_task() -> Task:
    return load_task("digits", seed=0)


@functools.cache
def digits_supernet() -> ElasticCNN2d:
    """Trained once per process (one sandwich epoch: enough for the plumbing)."""
    torch.manual_seed(0)
    net = ElasticCNN2d(channels=(8, 16, 32))
    with single_threaded():
        train_supernet(net, digits_task(), epochs=1, seed=0, sandwich=1)
    return net


def not_a_supernet() -> nn.Module:
    return nn.Linear(64, 10)
