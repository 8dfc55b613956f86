"""apply_policy: exactness at identity, real size reduction, costs, export, purity — on every zoo model."""

import io

import numpy as np
import pytest
import torch

from autocompress import Policy, SearchSpace, apply_policy, count_cost, export_onnx
from autocompress.zoo import list_zoo, load_zoo

from toy_models import ResidualDW

ZOO = list_zoo()


@pytest.fixture(scope="module", params=ZOO)
def entry(request):
    zoo = load_zoo(request.param, pretrained=False, seed=0)
    space = SearchSpace.from_model(zoo.model, zoo.example_input)
    # random weights for BN too, so that nothing is trivially equal
    with torch.no_grad():
        for module in zoo.model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return zoo, space


def _state_bytes(model: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def _inputs(zoo, batch: int = 8) -> torch.Tensor:
    return zoo.task.train[0][:batch].clone()


def test_identity_policy_reproduces_outputs(entry):
    zoo, space = entry
    model = zoo.model.eval()
    small = apply_policy(model, Policy.uniform(space, prune=0.0, rank=1.0), space=space).eval()
    x = _inputs(zoo)
    with torch.no_grad():
        expected, got = model(x), small(x)
    assert (got - expected).norm() / expected.norm() < 1e-5


def test_random_policies_run_cost_and_export(entry, tmp_path):
    zoo, space = entry
    model = zoo.model.eval()
    before = _state_bytes(model)
    rng = np.random.default_rng(0)
    for i in range(3):
        policy = space.random_policy(rng)
        small = apply_policy(model, policy, space=space).eval()
        x = _inputs(zoo)
        with torch.no_grad():
            out = small(x)
        assert torch.isfinite(out).all() and out.shape == model(x).shape
        counted = count_cost(small, zoo.example_input)
        predicted = space.cost(policy)
        assert predicted.as_dict() == counted.as_dict(), policy.to_json(None)
        assert predicted.layers == counted.layers
        # raises if ORT differs from PyTorch beyond the tolerance; a fake-quantized activation that lands within
        # float noise of a rounding boundary may round one step apart in the two runtimes (~3e-5 at the output)
        export_onnx(small, tmp_path / f"{i}.onnx", x, atol=1e-4)
    assert _state_bytes(model) == before, "apply_policy changed the user's model"


def test_pruning_really_removes_channels(entry):
    zoo, space = entry
    policy = Policy.uniform(space, prune=0.5)
    small = apply_policy(zoo.model, policy, space=space)
    original = sum(p.numel() for p in zoo.model.parameters())
    pruned = sum(p.numel() for p in small.parameters())
    assert pruned < 0.6 * original
    for name, group in space.groups.items():
        if group.prunable:
            layer = small.get_submodule(name)
            channels = layer.out_channels if hasattr(layer, "out_channels") else layer.out_features
            assert channels == space.kept_channels(name, 0.5)


def test_full_rank_factorization_is_exact():
    model = ResidualDW().eval()
    x = torch.randn(4, 1, 40)
    space = SearchSpace.from_model(model, x)
    # rank 0.999 keeps every rank (ceil), but does factorize
    small = apply_policy(model, Policy.uniform(space, rank=0.999), space=space).eval()
    assert type(small.stem).__name__ == "LowRank" and type(small.fc1).__name__ == "LowRank"
    with torch.no_grad():
        expected, got = model(x), small(x)
    assert (got - expected).norm() / expected.norm() < 1e-5


def test_lowrank_and_quant_together_are_counted_per_factor():
    model = ResidualDW().eval()
    x = torch.randn(1, 1, 40)
    space = SearchSpace.from_model(model, x)
    policy = Policy.uniform(space, prune=0.25, rank=0.5, weight_bits=4, act_bits=8)
    small = apply_policy(model, policy, space=space)
    cost = count_cost(small, x)
    assert cost == space.cost(policy)
    fc1 = [c for c in cost.layers if c.name.startswith("fc1.")]
    # fc1 inputs: 12 stem channels kept x 40 positions = 480; outputs: 24 of 32 kept;
    # rank ceil(0.5 * min(480, 24)) = 12: Linear(480, 12, no bias) then Linear(12, 24)
    assert [(c.params, c.weight_bits, c.act_bits) for c in fc1] == [(480 * 12, 4, 8), (12 * 24 + 24, 4, 8)]
    assert fc1[0].bitops == 480 * 12 * 4 * 8
    assert fc1[0].bytes == 480 * 12 * 4 / 8
    assert fc1[1].bytes == 12 * 24 * 4 / 8 + 24 * 4  # bias stays fp32


def test_apply_needs_an_example_input_for_a_hand_written_policy():
    model = ResidualDW()
    with pytest.raises(ValueError, match="needs an example input"):
        apply_policy(model, {"stem": {"prune": 0.5}})
    small = apply_policy(model, {"stem": {"prune": 0.5}}, torch.randn(1, 1, 40))
    assert small.stem.out_channels == 8


def test_prune_everything_is_clamped_with_a_warning():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    with pytest.warns(UserWarning, match="would remove every channel"):
        small = apply_policy(model, {"0": {"prune": 0.95}}, torch.randn(1, 4))
    assert small[0].out_features == 1 and small[2].in_features == 1


def test_custom_importance_is_used():
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))

    def keep_last(group):  # higher score = keep: prefer high channel indices
        return torch.arange(6, dtype=torch.float)

    small = apply_policy(model, {"0": {"prune": 0.5}}, torch.randn(1, 4), importance=keep_last)
    assert torch.equal(small[0].weight, model[0].weight[3:])
