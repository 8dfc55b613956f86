import time

import numpy as np
import pytest
import torch
from torch import nn

from autocompress import ModelTraceError, Policy, SearchSpace

from toy_models import Broken, Oddities, ResidualDW


def test_residual_depthwise_chain_is_one_group():
    model = ResidualDW()
    space = SearchSpace.from_model(model, torch.randn(2, 1, 40))
    group = space.groups["stem"]
    members = {(m.module, m.role) for m in group.members}
    # the stem, the depthwise conv, the pointwise conv (added to the stem's output) and
    # every BN share the channels; the flatten into fc1 removes 40 inputs per channel
    assert {("stem", "out"), ("dw", "both"), ("pw", "in"), ("pw", "out"), ("bn", "both"), ("fc1", "in")} <= members
    assert next(m.per_channel for m in group.members if m.module == "fc1") == 40
    assert space.layers["stem"].prunable and not space.layers["pw"].prunable
    assert space.layers["pw"].group == "stem" and space.layers["dw"].group == "stem"
    assert "depthwise" in space.layers["dw"].reasons["lowrank"]
    assert space.excluded == {"fc2": "output layer (exclude_output=True)"}


def test_layers_it_cannot_handle_are_listed_with_the_reason():
    space = SearchSpace.from_model(Oddities(), torch.randn(2, 3, 6, 6))
    assert space.excluded["unused"].startswith("never called")
    shared = space.layers["shared"]  # low rank and quant act on every call alike; pruning never
    assert shared.methods == ["lowrank", "quant"] and shared.reasons["prune"] == "called 2 times in one forward (shared weights)"
    assert "Conv3d is not supported" in space.excluded["conv3d"]
    assert space.excluded["head"].startswith("output layer")
    grouped = space.layers["grouped"]
    assert not grouped.decomposable and "grouped convolution (groups=2)" in grouped.reasons["lowrank"]
    assert grouped.quantizable
    assert "grouped convolution" in space.layers["conv"].reasons["prune"]


def test_user_exclusions_and_bad_patterns():
    model = ResidualDW()
    space = SearchSpace.from_model(model, torch.randn(2, 1, 40), exclude=["fc*"], exclude_output=False)
    assert space.excluded == {"fc1": "excluded by the user", "fc2": "excluded by the user"}
    with pytest.raises(ValueError, match="exclude pattern 'nope' matches no module"):
        SearchSpace.from_model(model, torch.randn(2, 1, 40), exclude=["nope"])


def test_model_that_fails_names_the_module():
    with pytest.raises(ModelTraceError, match="in module 'second'.*exclude=\\['second'\\]"):
        SearchSpace.from_model(Broken(), torch.randn(2, 4))


def test_bad_example_input_type():
    with pytest.raises(TypeError, match="example_input must be a tensor"):
        SearchSpace.from_model(ResidualDW(), [1, 2, 3])


def test_space_does_not_change_the_model():
    model = ResidualDW().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    SearchSpace.from_model(model, torch.randn(4, 1, 40))
    assert model.training and all(m.training for m in model.modules())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_kept_channels_clamps_to_one_with_a_warning():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    space = SearchSpace.from_model(model, torch.randn(2, 4))
    assert space.kept_channels("0", 0.5) == 4
    with pytest.warns(UserWarning, match="would remove every channel of '0'"):
        assert space.kept_channels("0", 0.95) == 1


def test_channel_multiple_rounds_kept_channels():
    model = nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 2))
    space = SearchSpace.from_model(model, torch.randn(2, 4), channel_multiple=8)
    assert space.kept_channels("0", 0.3) == 48  # 44.8 -> 45 -> nearest multiple of 8
    assert space.kept_channels("0", 0.95) == 8


def test_cost_is_fast_enough_for_search():
    space = SearchSpace.from_model(ResidualDW(), torch.randn(1, 1, 40))
    rng = np.random.default_rng(0)
    policies = [space.random_policy(rng) for _ in range(200)]
    start = time.perf_counter()
    for policy in policies:
        space.cost(policy)
    per_policy = (time.perf_counter() - start) / len(policies)
    assert per_policy < 1e-3, f"space.cost took {per_policy * 1e3:.3f} ms per policy"


def test_cost_of_identity_policy_equals_counted_cost():
    from autocompress import count_cost

    model = ResidualDW()
    x = torch.randn(1, 1, 40)
    space = SearchSpace.from_model(model, x)
    assert space.cost(Policy()) == count_cost(model, x)


def test_untraceable_channel_dependencies_leave_quant_and_lowrank(monkeypatch):
    import autocompress.discovery as space_module

    def fail(*args, **kwargs):
        raise RuntimeError("custom op the tracer does not know")

    monkeypatch.setattr(space_module, "discover_groups", fail)
    space = SearchSpace.from_model(ResidualDW(), torch.randn(1, 1, 40))
    stem = space.layers["stem"]
    assert not stem.prunable and stem.decomposable and stem.quantizable
    assert "could not be traced (RuntimeError: custom op the tracer does not know)" in stem.reasons["prune"]
    assert space.groups == {}


def test_methods_restrict_the_genes():
    space = SearchSpace.from_model(ResidualDW(), torch.randn(1, 1, 40), methods=["prune"])
    assert {g.field for g in space.genes} == {"prune"}
    assert space.layers["stem"].reasons["quant"] == "method not selected"
    assert not space.layers["stem"].quantizable and not space.layers["stem"].decomposable
    with pytest.raises(ValueError, match="methods must be a non-empty subset"):
        SearchSpace.from_model(ResidualDW(), torch.randn(1, 1, 40), methods=["distill"])


def test_a_layer_called_twice_is_factorized_and_quantized_for_both_calls():
    from autocompress import apply_policy
    from autocompress.cost import count_cost
    from autocompress.policy import LayerGenes

    model, x = Oddities().eval(), torch.randn(2, 3, 6, 6)
    space = SearchSpace.from_model(model, x)
    policy = Policy(layers={"shared": LayerGenes(rank=0.5, weight_bits=8, act_bits=8)})
    small = apply_policy(model, policy, x, space=space)
    built, analytic = count_cost(small, x), space.cost(policy)
    assert built.as_dict() == pytest.approx(analytic.as_dict())
    assert built.layer("shared.0").macs == built.layer("shared.1").macs == 2 * 8 * 4  # both calls, each factor
    with torch.no_grad():
        assert small(x).shape == model(x).shape
