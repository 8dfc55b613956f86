"""Elastic supernet: extraction equals the supernet at that configuration; encoding round-trips; training runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autocompress.elastic import (
    ElasticCNN1d,
    ElasticModel,
    StageConfig,
    SubnetConfig,
    subnet_metric,
    train_supernet,
)
from autocompress.zoo import load_task


@pytest.fixture(scope="module")
def supernet():
    torch.manual_seed(0)
    net = ElasticCNN1d(channels=(16, 32, 64))
    with torch.no_grad():  # non-trivial BN statistics, so that slicing them is tested
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return net.eval()


def test_extracted_subnets_reproduce_the_supernet(supernet):
    x = torch.randn(5, 1, 40)
    rng = np.random.default_rng(0)
    configs = [supernet.largest(), supernet.smallest(), *(supernet.random(rng) for _ in range(6))]
    for config in configs:
        with torch.no_grad():
            expected = supernet(x, config)
            got = supernet.extract(config).eval()(x)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    small, large = supernet.extract(supernet.smallest()), supernet.extract(supernet.largest())
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(small) < count(large) / 10
    assert isinstance(supernet, ElasticModel)


def test_encoding_round_trips_and_bad_configs_are_named(supernet):
    config = supernet.random(np.random.default_rng(1))
    vector = config.to_vector()
    assert vector.shape == (9,) and SubnetConfig.from_vector(vector) == config
    bad = SubnetConfig((StageConfig(2, 0.6, 5),) * 3)
    with pytest.raises(ValueError, match=r"stage 0: width 0.6 not allowed; allowed: \[0.5, 0.75, 1.0\]"):
        supernet.extract(bad)
    with pytest.raises(ValueError, match="has 3 stages; the config gives 1"):
        supernet(torch.randn(1, 1, 40), SubnetConfig((StageConfig(1, 1.0, 3),)))
    with pytest.raises(ValueError, match="holds \\(depth, width, kernel\\) per stage"):
        SubnetConfig.from_vector([1, 2])


def test_sandwich_training_teaches_both_ends():
    task = load_task("mnist1d", seed=0)
    torch.manual_seed(0)
    net = ElasticCNN1d(channels=(16, 32, 64))
    stats = train_supernet(net, task, epochs=0.5, seed=0, sandwich=1)
    assert stats["steps"] > 0 and np.isfinite(stats["final_loss"])
    largest, _ = subnet_metric(net, net.largest(), task)
    smallest, _ = subnet_metric(net, net.smallest(), task)
    assert largest > 30 and smallest > 20  # 10 classes: chance is 10 %, both ends learned after half an epoch
