"""Elastic supernet: extraction equals the supernet at that configuration; encoding round-trips; training runs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from autocompress.apply import apply_policy
from autocompress.cost import count_cost
from autocompress.elastic import (
    ElasticCNN1d,
    ElasticCNN2d,
    ElasticModel,
    ElasticSpace,
    QuantSubnet,
    StageConfig,
    SubnetConfig,
    subnet_metric,
    train_supernet,
)
from autocompress.policy import LayerGenes
from autocompress.search.study import policy_key
from autocompress.zoo import load_task

INPUTS = {ElasticCNN1d: (5, 1, 40), ElasticCNN2d: (5, 1, 8, 8)}


def randomized(net: torch.nn.Module) -> torch.nn.Module:
    """``net`` in eval mode with non-trivial BN statistics and affine parameters, so that slicing them is tested."""
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return net.eval()


@pytest.fixture(scope="module")
def supernet():
    torch.manual_seed(0)
    return randomized(ElasticCNN1d(channels=(16, 32, 64)))


@pytest.mark.parametrize("kind", [ElasticCNN1d, ElasticCNN2d])
def test_extracted_subnets_reproduce_the_supernet(kind, one_thread):
    torch.manual_seed(0)
    supernet = randomized(kind(channels=(16, 32, 64)))
    x = torch.randn(*INPUTS[kind])
    rng = np.random.default_rng(0)
    configs = [supernet.largest(), supernet.smallest(), *(supernet.random(rng) for _ in range(6))]
    for config in configs:
        with torch.no_grad():
            expected = supernet(x, config)
            got = supernet.extract(config).eval()(x)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    small, large = supernet.extract(supernet.smallest()), supernet.extract(supernet.largest())
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(small) < count(large) / 5
    assert isinstance(supernet, ElasticModel)
    names = {n for n, _ in large.named_modules()}
    assert all(n in names for stage in supernet.stage_layers(supernet.largest()) for n in stage)


def test_the_2d_supernet_defaults_fit_the_digits():
    net = ElasticCNN2d()
    assert net.channels == (16, 32, 64) and net.kernels == (3, 5) and len(net.choices()) == 3
    assert net(torch.randn(2, 1, 8, 8), net.smallest()).shape == (2, 10)


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


def test_candidate_encoding_round_trips_through_vectors_and_policies(supernet):
    rng = np.random.default_rng(2)
    for _ in range(5):
        config = supernet.random(rng)
        bits = tuple((int(rng.choice([4, 6, 8, 32])), int(rng.choice([4, 6, 8, 32]))) for _ in config.stages)
        candidate = QuantSubnet(config, bits)
        vector = candidate.to_vector()
        assert vector.shape == (15,) and QuantSubnet.from_vector(vector) == candidate
        policy = candidate.to_policy(supernet)
        assert QuantSubnet.from_policy(policy, supernet) == candidate
        assert policy.arch == tuple(config.to_vector())
        assert type(policy).from_json(policy.to_json()) == policy  # the study stores it as JSON
    same_layers = QuantSubnet(SubnetConfig((StageConfig(1, 1.0, 3),) * 3), ((8, 8),) * 3)
    other_width = QuantSubnet(SubnetConfig((StageConfig(1, 0.5, 3),) * 3), ((8, 8),) * 3)
    first, second = same_layers.to_policy(supernet), other_width.to_policy(supernet)
    assert first.layers == second.layers and policy_key(first) != policy_key(second)
    assert "arch" not in QuantSubnet.full_precision(supernet.largest()).to_policy(supernet).model_copy(
        update={"arch": None}).to_dict()  # policies of a fixed model serialize as before
    with pytest.raises(ValueError, match="per stage; got 4 values"):
        QuantSubnet.from_vector([1, 2, 3, 4])
    with pytest.raises(ValueError, match=r"1 bit pairs for 3 stages of 1 slot\(s\) each; need 3"):
        QuantSubnet(same_layers.config, ((8, 8),))
    deep = QuantSubnet(SubnetConfig((StageConfig(2, 1.0, 3),) * 3), ((8, 8),) * 3).to_policy(supernet)
    mixed = deep.model_copy(update={"layers": {**deep.layers, "stage2.1.conv": LayerGenes(weight_bits=4, act_bits=8)}})
    with pytest.raises(ValueError, match=r"stage 2: its layers have different bits \[\(4, 8\), \(8, 8\)\]"):
        QuantSubnet.from_policy(mixed, supernet)


def test_per_block_bits_round_trip_and_reach_each_block(supernet):
    rng = np.random.default_rng(5)
    for _ in range(5):
        config = supernet.random(rng)
        bits = tuple((int(rng.choice([4, 6, 8])), int(rng.choice([4, 8, 32]))) for _ in range(3 * 3))
        candidate = QuantSubnet(config, bits, blocks=3)
        vector = candidate.to_vector()
        assert vector.shape == (3 * (3 + 2 * 3),) and QuantSubnet.from_vector(vector, blocks=3) == candidate
        policy = candidate.to_policy(supernet)
        for i, stage in enumerate(config.stages):
            for j in range(3):
                pair = candidate.stage_bits(i)[j]
                if j < stage.depth:  # each block its own pair
                    genes = policy.genes(f"stage{i}.{j}.conv")
                    assert (genes.weight_bits, genes.act_bits) == pair == bits[3 * i + j]
                else:  # a slot past the stage's depth quantizes nothing
                    assert pair == (32, 32)
        assert QuantSubnet.from_policy(policy, supernet, blocks=3) == candidate
        assert len(candidate.features()) == 9 + 2 * 9
    two = QuantSubnet(SubnetConfig((StageConfig(3, 1.0, 3),) * 3), ((4, 4), (8, 8)) * 3, blocks=2)
    layers = two.to_policy(supernet).layers  # the last slot covers the blocks after it
    assert [(layers[f"stage0.{j}.conv"].weight_bits) for j in range(3)] == [4, 8, 8]
    per_stage = QuantSubnet(two.config, ((6, 8),) * 3)
    assert QuantSubnet.from_policy(per_stage.to_policy(supernet), supernet, blocks=3).bits == ((6, 8),) * 9
    with pytest.raises(ValueError, match=r"stage 0, blocks 1\+: its layers have different bits"):
        QuantSubnet.from_policy(two.to_policy(supernet).model_copy(update={"layers": {
            **layers, "stage0.2.conv": LayerGenes(weight_bits=6, act_bits=8)}}), supernet, blocks=2)
    with pytest.raises(ValueError, match=r"3 bit pairs for 3 stages of 2 slot\(s\) each; need 6"):
        QuantSubnet(two.config, ((8, 8),) * 3, blocks=2)
    with pytest.raises(ValueError, match="blocks .bit slots per stage. must be an integer >= 1, got 0"):
        QuantSubnet(two.config, (), blocks=0)


def test_elastic_space_costs_are_exact(one_thread):
    task = load_task("digits", seed=0)
    torch.manual_seed(0)
    net = ElasticCNN2d()
    space = ElasticSpace(net, task)
    rng = np.random.default_rng(3)
    for _ in range(4):
        config = net.random(rng)
        candidate = QuantSubnet(config, tuple((int(rng.choice([2, 4, 8, 32])), int(rng.choice([4, 8, 32])))
                                              for _ in config.stages))
        policy = space.policy(candidate)
        built = count_cost(apply_policy(net.extract(config), policy, space.example), space.example)
        assert space.cost(candidate) == built  # row by row
        assert space.subnet(policy.arch)[1].cost(policy) == built
        assert space.candidate(policy) == candidate
        per_block = QuantSubnet(config, tuple((int(rng.choice([2, 4, 8, 32])), int(rng.choice([4, 8, 32])))
                                              for _ in range(3 * len(config.stages))), blocks=3)
        built = count_cost(apply_policy(net.extract(config), space.policy(per_block), space.example), space.example)
        assert space.cost(per_block) == built


def test_the_documented_elastic_model_example_runs(tmp_path, monkeypatch, one_thread):
    text = (Path(__file__).parents[1] / "docs" / "elastic.md").read_text()
    code = "\n".join(re.findall(r"```python\n(.*?)```", text, flags=re.S))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "elastic_example"}
    exec(compile(code, "docs/elastic.md", "exec"), namespace)  # noqa: S102 - the documentation's own example
    records = namespace["study"].records()
    assert len(records) == 5 and all(r.ok and r.policy.arch is not None for r in records)
    assert [r.tags["phase"] for r in records] == ["label"] * 4 + ["final"]
    assert records[-1].values["bitops_ratio"] <= 0.05
