import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from autocompress import Policy, PolicyError, SearchSpace

from toy_models import ResidualDW


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return SearchSpace.from_model(ResidualDW(), torch.randn(2, 1, 40))


def test_json_round_trip_is_exact(space, tmp_path):
    policy = space.random_policy(3)
    assert Policy.from_json(policy.to_json()) == policy
    policy.save(tmp_path / "p.json")
    assert Policy.load(tmp_path / "p.json") == policy
    assert json.loads(policy.to_json())["inputs"][0]["shape"] == [2, 1, 40]


def test_bare_mapping_is_accepted():
    policy = Policy.from_dict({"stem": {"prune": 0.5}})
    assert policy.genes("stem").prune == 0.5
    assert policy.genes("fc1").is_identity  # missing layers are left alone


@pytest.mark.parametrize(
    "genes, field, allowed",
    [
        ({"prune": 0.97}, "prune", "less than or equal to 0.95"),
        ({"prune": -0.1}, "prune", "greater than or equal to 0"),
        ({"rank": 0.0}, "rank", "greater than 0"),
        ({"weight_bits": 9}, "weight_bits", "[2, 3, 4, 5, 6, 7, 8, 32]"),
        ({"act_bits": "eight"}, "act_bits", "[2, 3, 4, 5, 6, 7, 8, 32]"),
        ({"prune": "half"}, "prune", "valid number"),
        ({"sparsity": 0.5}, "sparsity", "Extra inputs are not permitted"),
    ],
)
def test_invalid_values_name_layer_field_and_range(genes, field, allowed):
    with pytest.raises(ValidationError) as info:
        Policy.from_dict({"layers": {"stem": genes}})
    text = str(info.value)
    assert "stem" in text and field in text and allowed in text


def test_unknown_layer_is_named_with_the_known_ones(space):
    with pytest.raises(PolicyError, match="unknown layer 'conv9'.*stem, dw, pw, fc1"):
        space.validate({"conv9": {"prune": 0.5}})


def test_prune_on_a_coupled_member_names_the_leader(space):
    with pytest.raises(PolicyError, match="layer 'pw', field 'prune'.*coupled with 'stem'"):
        space.validate({"pw": {"prune": 0.5}})


def test_output_layer_can_not_be_compressed(space):
    with pytest.raises(PolicyError, match="'fc2' is left uncompressed .output layer"):
        space.validate({"fc2": {"weight_bits": 8}})
    space.validate({"fc2": {}})  # identity genes on it are harmless


def test_encode_decode_are_inverse(space):
    rng = np.random.default_rng(0)
    for _ in range(20):
        policy = space.random_policy(rng)
        vector = space.encode(policy)
        assert vector.shape == (len(space.genes),)
        assert space.decode(vector) == policy
    # the gene order is documented: (layer, field) in layer order
    assert [(g.layer, g.field) for g in space.genes][:4] == [
        ("stem", "prune"),
        ("stem", "rank"),
        ("stem", "weight_bits"),
        ("stem", "act_bits"),
    ]


def test_decode_snaps_to_legal_choices(space):
    vector = space.encode(Policy.uniform(space, prune=0.5, weight_bits=8, act_bits=8))
    vector = vector + 0.04  # off-grid
    policy = space.decode(vector)
    assert policy.genes("stem").prune == 0.5
    assert policy.genes("stem").weight_bits == 8
    with pytest.raises(ValueError, match=f"expected a vector of {len(space.genes)} genes"):
        space.decode(vector[:-1])


def test_uniform_sets_only_allowed_genes(space):
    policy = Policy.uniform(space, prune=0.5, rank=0.5, weight_bits=4, act_bits=8)
    assert policy.genes("stem").prune == 0.5
    assert policy.genes("pw").prune == 0.0  # follows the stem's group
    assert policy.genes("dw").rank == 1.0  # depthwise: not decomposable
    assert policy.genes("dw").weight_bits == 4
    assert "fc2" not in policy.layers
    space.validate(policy)
