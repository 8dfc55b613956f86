"""Transformer blocks: attention heads and FFN units really removed, dynamic int8 deployment.

A small randomly initialised BERT (Hugging Face transformers, optional extra) behind the
same SentenceEmbedder as all-MiniLM-L6-v2; the real model is tested in test_minilm.py.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

pytest.importorskip("transformers")
from transformers import BertConfig, BertModel  # noqa: E402

from autocompress.apply import apply_policy  # noqa: E402
from autocompress.cost import count_cost  # noqa: E402
from autocompress.export import export_dynamic_int8, float_twin, int8_layers  # noqa: E402
from autocompress.hardware.targets import Target, measure  # noqa: E402
from autocompress.policy import LayerGenes, Policy  # noqa: E402
from autocompress.space import PolicyError, SearchSpace  # noqa: E402
from autocompress.zoo.minilm import SentenceEmbedder  # noqa: E402

HEADS, HEAD_DIM, FFN = 4, 8, 64
Q = "bert.encoder.layer.{}.attention.self.query"
FFN_IN = "bert.encoder.layer.{}.intermediate.dense"


@pytest.fixture(scope="module")
def model() -> SentenceEmbedder:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=120, hidden_size=HEADS * HEAD_DIM, num_hidden_layers=2, num_attention_heads=HEADS,
                        intermediate_size=FFN, max_position_embeddings=32)
    return SentenceEmbedder(BertModel(config, add_pooling_layer=False)).eval()


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 120, (6, 12), generator=generator)
    mask = torch.ones_like(ids)
    mask[:3, 8:] = 0  # padded sentences
    return torch.stack([ids * mask, mask], dim=1)


@pytest.fixture(scope="module")
def space(model: SentenceEmbedder, tokens: torch.Tensor) -> SearchSpace:
    return SearchSpace.from_model(model, tokens)


def run(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(tokens)


def test_heads_and_ffn_units_are_prunable_groups(space: SearchSpace) -> None:
    for layer in range(2):
        heads = space.groups[Q.format(layer)]
        assert (heads.channels, heads.multiple, heads.units, heads.prunable) == (HEADS * HEAD_DIM, HEAD_DIM, HEADS, True)
        members = {m.module.rsplit(".", 2)[-2] + "." + m.module.rsplit(".", 1)[-1]: m.role for m in heads.members}
        assert members == {"self.query": "out", "self.key": "out", "self.value": "out", "output.dense": "in"}
        ffn = space.groups[FFN_IN.format(layer)]
        assert (ffn.channels, ffn.multiple, ffn.prunable) == (FFN, 1, True)


def test_removing_nothing_reproduces_the_model_exactly(model, tokens, space) -> None:
    policy = Policy(layers={name: LayerGenes() for name in space.layers})
    assert torch.equal(run(apply_policy(model, policy, tokens, space=space), tokens), run(model, tokens))


def test_removed_heads_equal_zeroed_output_columns(model, tokens, space) -> None:
    """Removing heads must equal the original with those heads' output-projection inputs zeroed."""
    small = apply_policy(model, Policy(layers={Q.format(0): LayerGenes(prune=0.5)}), tokens, space=space)
    attention = small.bert.encoder.layer[0].attention
    assert attention.self.query.out_features == attention.output.dense.in_features == 2 * HEAD_DIM
    original_q = model.bert.encoder.layer[0].attention.self.query.weight
    kept = [h for h in range(HEADS) if any(torch.equal(original_q[h * HEAD_DIM:(h + 1) * HEAD_DIM], attention.self.query.weight[k * HEAD_DIM:(k + 1) * HEAD_DIM]) for k in range(2))]
    assert len(kept) == 2
    reference = float_twin(model)
    with torch.no_grad():
        dense = reference.bert.encoder.layer[0].attention.output.dense
        for head in set(range(HEADS)) - set(kept):
            dense.weight[:, head * HEAD_DIM:(head + 1) * HEAD_DIM] = 0
    torch.testing.assert_close(run(small, tokens), run(reference, tokens), atol=1e-6, rtol=1e-5)


def test_removed_ffn_units_equal_zeroed_down_projection_columns(model, tokens, space) -> None:
    small = apply_policy(model, Policy(layers={FFN_IN.format(1): LayerGenes(prune=0.75)}), tokens, space=space)
    up = small.bert.encoder.layer[1].intermediate.dense
    assert up.out_features == small.bert.encoder.layer[1].output.dense.in_features == FFN // 4
    original = model.bert.encoder.layer[1].intermediate.dense.weight
    kept = [i for i in range(FFN) if any(torch.equal(original[i], row) for row in up.weight)]
    reference = float_twin(model)
    with torch.no_grad():
        down = reference.bert.encoder.layer[1].output.dense
        down.weight[:, [i for i in range(FFN) if i not in kept]] = 0
    torch.testing.assert_close(run(small, tokens), run(reference, tokens), atol=1e-6, rtol=1e-5)


def test_a_policy_removing_every_head_is_rejected(space) -> None:
    with pytest.raises(PolicyError, match=r"removes every attention head \(4 heads of 8 channels\)"):
        space.validate(Policy(layers={Q.format(1): LayerGenes(prune=0.9)}))
    assert space.kept_channels(Q.format(1), 0.75) == HEAD_DIM  # one head left is fine


def test_analytic_cost_matches_the_built_model(model, tokens, space) -> None:
    for seed in range(4):
        policy = space.random_policy(seed)
        built = count_cost(apply_policy(model, policy, tokens, space=space), tokens)
        assert space.cost(policy).as_dict() == pytest.approx(built.as_dict())


def test_dynamic_space_ties_activation_bits(model, tokens) -> None:
    space = SearchSpace.from_model(model, tokens, weight_bits_choices=(32, 8), activations="dynamic", exclude_output=False)
    assert {g.field for g in space.genes} == {"prune", "rank", "weight_bits"}
    policy = space.random_policy(3)
    assert policy.activations == "dynamic"
    assert all(g.act_bits == g.weight_bits for g in policy.layers.values())
    with pytest.raises(PolicyError, match="act_bits must equal weight_bits"):
        space.validate(Policy(layers={Q.format(0): LayerGenes(weight_bits=8, act_bits=32)}, activations="dynamic"))
    with pytest.raises(PolicyError, match="set the policy's 'activations' to 'dynamic'"):
        space.validate(Policy(layers={Q.format(0): LayerGenes(weight_bits=8, act_bits=8)}))


def test_dynamic_int8_export_matches_pytorch(model, tokens, tmp_path) -> None:
    space = SearchSpace.from_model(model, tokens, weight_bits_choices=(32, 8), activations="dynamic", exclude_output=False)
    policy = Policy.uniform(space, weight_bits=8)
    keep = "bert.encoder.layer.1.output.dense"
    policy = policy.model_copy(update={"layers": {**policy.layers, keep: LayerGenes(), Q.format(0): LayerGenes(prune=0.25, weight_bits=8, act_bits=8)}})
    small = apply_policy(model, policy, tokens, space=space)
    assert keep not in int8_layers(small) and len(int8_layers(small)) == len(space.layers) - 1
    result = export_dynamic_int8(small, tmp_path / "m.onnx", tokens)
    graph = onnx.load(str(result.path)).graph
    integer = [n.name for n in graph.node if n.op_type == "MatMulInteger"]
    assert len(integer) == len(space.layers) - 1
    assert result.min_cosine > 0.999
    assert any(n.op_type == "MatMul" and "layer.1/output/dense" in n.name for n in graph.node)
    # the file's outputs against the compressed PyTorch model on other inputs too
    other = tokens.flip(0)
    from autocompress.export import onnx_session, run_session

    got = run_session(onnx_session(result.path), (other,))[0]
    expected = run(small, other).numpy()
    cosine = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() > 0.999


def test_static_quantization_is_not_deployable_as_dynamic_int8(model, tokens, space) -> None:
    small = apply_policy(model, Policy(layers={Q.format(0): LayerGenes(weight_bits=8, act_bits=8)}), tokens, space=space)
    with pytest.raises(ValueError, match="static input ranges"):
        int8_layers(small)


def test_int8_target_times_the_deployed_model(model, tokens) -> None:
    space = SearchSpace.from_model(model, tokens, weight_bits_choices=(32, 8), activations="dynamic", exclude_output=False)
    small = apply_policy(model, Policy.uniform(space, weight_bits=8), tokens, space=space)
    result = measure(small, tokens[:1], Target("ort-cpu-int8", batch=4, warmup=1, repeats=3))
    assert result.median_ms > 0 and result.batch_size == 4
    static = apply_policy(model, Policy(layers={Q.format(0): LayerGenes(weight_bits=8, act_bits=8)}), tokens)
    with pytest.raises(ValueError, match="static input ranges"):  # timed as deployed, so it must be deployable
        measure(static, tokens[:1], Target("ort-cpu-int8", batch=4, warmup=1, repeats=3))


def test_search_through_the_study_with_the_deployed_latency(model, tokens, tmp_path) -> None:
    """Transformer policies go through search() and the Study like any other; latency is the deployed file's."""
    from autocompress.search import load_config, search
    from autocompress.task import Task
    from autocompress.zoo.minilm import cosine_loss, cosine_metric

    generator = torch.Generator().manual_seed(2)
    ids = torch.randint(1, 120, (40, 12), generator=generator)
    inputs = torch.stack([ids, torch.ones_like(ids)], dim=1)
    with torch.no_grad():
        targets = model(inputs)
    task = Task("tiny-fidelity", (inputs[:24], targets[:24]), (inputs[24:], targets[24:]), metric=cosine_metric, loss=cosine_loss)
    space = SearchSpace.from_model(model, inputs[:2], methods=("prune", "quant"), prune_choices=(0.0, 0.5),
                                   weight_bits_choices=(32, 8), activations="dynamic", exclude_output=False)
    policies = [Policy.uniform(space, weight_bits=8), Policy.uniform(space, prune=0.5, weight_bits=8)]
    study = search(model, task, space, objectives=("accuracy", "latency"), strategy="given", strategy_params={"policies": policies},
                   budget=2, storage=tmp_path / "s.db", finetune_epochs=0.5, evaluator={"lr": 1e-4, "device": "cpu"},
                   latency={"runtime": "ort-cpu-int8", "batch": 4, "repeats": 3}, progress=False)
    records = [r for r in study.records() if r.state == "complete"]
    assert len(records) == 2 and all(r.policy.activations == "dynamic" for r in records)
    assert all(0.5 < r.values["metric"] <= 1.0 + 1e-6 and r.values["latency_ms"] > 0 for r in records)
    assert records[1].values["params"] < records[0].values["params"]
    config = load_config("examples/minilm.yaml")
    assert config.space.activations == "dynamic" and config.latency.runtime == "ort-cpu-int8"
