"""Models we did not write: every architecture of ``tests/third_party.py`` compresses, runs and exports.

Each ``transformers`` class (small config, random weights, keyword inputs, a ``ModelOutput``) goes
through: ``SearchSpace.from_model``; prune-only, low-rank-only, quant-only and all-three uniform
policies and three random ones; the compressed model runs with the original output shape; its
counted params/FLOPs equal ``space.cost``; the input model is byte-identical; fp32 ONNX export matches
PyTorch; int8 export (static for convolutional models, dynamic for transformers) runs in ONNX Runtime
with outputs close to fp32. Adding an architecture is one line in ``tests/third_party.py``.
"""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("transformers")

from third_party import ARCHITECTURES, Arch  # noqa: E402

from autocompress.apply import apply_policy  # noqa: E402
from autocompress.cost import count_cost  # noqa: E402
from autocompress.export import (  # noqa: E402
    export_dynamic_int8,  # noqa: E402
    export_int8,  # noqa: E402
    export_onnx,
    onnx_session,
    run_session,
)
from autocompress.layers import is_transposed_linear  # noqa: E402
from autocompress.policy import Policy  # noqa: E402
from autocompress.quiet import ThirdPartyWarnings  # noqa: E402
from autocompress.space import SearchSpace  # noqa: E402

IDS = [a.name for a in ARCHITECTURES]


def fingerprint(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    digest.update(repr([m.training for m in model.modules()]).encode())
    return digest.hexdigest()


def logits(model: nn.Module, example: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**example).logits


@pytest.fixture(scope="module", params=ARCHITECTURES, ids=IDS)
def case(request: pytest.FixtureRequest) -> tuple[Arch, nn.Module, dict, SearchSpace]:
    arch = request.param
    model, example = arch.build(), arch.example()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ThirdPartyWarnings)
        space = SearchSpace.from_model(model, example, output="logits")
    return arch, model, example, space


def policies(space: SearchSpace) -> dict[str, Policy]:
    chosen = {
        "prune": Policy.uniform(space, prune=0.5),
        "lowrank": Policy.uniform(space, rank=0.5),
        "quant": Policy.uniform(space, weight_bits=8, act_bits=8),
        "all": Policy.uniform(space, prune=0.5, rank=0.5, weight_bits=8, act_bits=8),
    }
    return chosen | {f"random{seed}": space.random_policy(seed) for seed in range(3)}


def test_every_conv_and_linear_is_compressible_or_listed(case) -> None:
    arch, model, _, space = case
    weight_layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)) or is_transposed_linear(m)]
    for name in weight_layers:
        assert name in space.layers or name in space.excluded, name
        if name in space.layers:
            assert space.layers[name].methods, (name, space.layers[name].reasons)
    compressible = [n for n in weight_layers if n in space.layers]
    assert len(compressible) >= len(weight_layers) - 1  # all but the output layer
    for method in ("lowrank", "quant"):
        assert sum(method in space.layers[n].methods for n in compressible) >= len(compressible) // 2, method
    rows = {row["layer"]: row for row in space.describe()}
    assert all(rows[name]["why_not"] for name in space.excluded)


def test_policies_run_and_cost_what_the_space_says(case) -> None:
    _, model, example, space = case
    before = fingerprint(model)
    reference = logits(model, example)
    original = count_cost(model, example)
    assert space.cost(Policy()).as_dict() == pytest.approx(original.as_dict())
    for label, policy in policies(space).items():
        small = apply_policy(model, policy, example, space=space)
        out = logits(small, example)
        assert out.shape == reference.shape and torch.isfinite(out).all(), label
        built, analytic = count_cost(small, example), space.cost(policy)
        assert (built.params, built.flops) == (analytic.params, analytic.flops), label
        assert built.bitops == analytic.bitops and built.bytes == pytest.approx(analytic.bytes), label
        if label in ("prune", "lowrank", "all") and any(label in ("all", m) for i in space.layers.values() for m in i.methods):
            assert built.params < original.params, label
    assert fingerprint(model) == before


def test_fp32_onnx_export_matches_pytorch(case, tmp_path) -> None:
    _, model, example, space = case
    small = apply_policy(model, Policy.uniform(space, prune=0.5, rank=0.5, weight_bits=8, act_bits=8), example, space=space)
    path = export_onnx(small, tmp_path / "m.onnx", example, output="logits")  # checked against PyTorch
    session = onnx_session(path)
    assert [i.name for i in session.get_inputs()] == list(example)  # named after the model's keywords
    other = type(example)({k: v.flip(0) for k, v in example.items()})
    got = run_session(session, other)[0]
    expected = logits(small, other).numpy()
    scale = np.abs(expected).max()
    assert np.abs(got - expected).max() <= 0.05 * scale + 1e-4


def test_int8_export_runs_close_to_fp32(case, tmp_path) -> None:
    arch, model, example, _ = case
    batch = type(example)({k: torch.cat([v] * 4) for k, v in example.items()})
    if arch.family == "conv":
        space = SearchSpace.from_model(model, example, output="logits", weight_bits_choices=(32, 8), act_bits_choices=(32, 8))
        small = apply_policy(model, Policy.uniform(space, weight_bits=8, act_bits=8), example, space=space)
        result = export_int8(small, tmp_path / "m.onnx", example, batch, output="logits")
        assert result.int8_bytes < result.fp32_bytes
        assert result.agreement.relative_diff < 0.25
        path = result.int8_path
    else:
        space = SearchSpace.from_model(model, example, output="logits", weight_bits_choices=(32, 8), activations="dynamic")
        small = apply_policy(model, Policy.uniform(space, weight_bits=8), example, space=space)
        result = export_dynamic_int8(small, tmp_path / "m.onnx", example, check_inputs=batch, output="logits")
        assert result.min_cosine >= 0.98 and result.int8_layers
        path = result.path
    got = run_session(onnx_session(path), batch)[0]
    assert got.shape == logits(model, batch).shape and np.isfinite(got).all()


def test_a_transformers_model_is_evaluated_and_searched_on_its_logits(tmp_path) -> None:
    """Positional pixels, a ModelOutput back: the space's output= reaches the metric, the loss and the search."""
    from autocompress.evaluate import Evaluator
    from autocompress.search import search
    from autocompress.task import Task

    arch = next(a for a in ARCHITECTURES if a.name == "resnet-bottleneck")
    model = arch.build()
    generator = torch.Generator().manual_seed(3)
    images = torch.randn(48, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 5, (48,), generator=generator)
    task = Task("pixels", (images[:32], labels[:32]), (images[32:], labels[32:]), batch_size=16)
    space = SearchSpace.from_model(model, images[:2], output="logits")
    result = Evaluator(task, finetune_steps=2).evaluate(model, Policy.uniform(space, prune=0.5, weight_bits=8, act_bits=8), space=space)
    assert 0 <= result.metric <= 100 and result.metric_after_finetune is not None
    assert result.cost.params < result.original_cost.params
    with torch.no_grad():
        expected = 100 * float((model(images[32:]).logits.argmax(1) == labels[32:]).float().mean())
    assert result.metric_original == pytest.approx(expected)
    policies = [Policy.uniform(space, prune=0.25), Policy.uniform(space, rank=0.5)]
    study = search(model, task, space, strategy="given", strategy_params={"policies": policies}, budget=2,
                   storage=tmp_path / "s.db", finetune_epochs=0, progress=False)
    records = [r for r in study.records() if r.state == "complete"]
    assert len(records) == 2 and all(r.values["params_ratio"] < 1 for r in records)


def test_gpt2_mlp_is_pruned_through_its_conv1d_layers() -> None:
    """transformers' Conv1D handled as Linear; its key/value cache does not hide the channel dependencies."""
    arch = next(a for a in ARCHITECTURES if a.name == "gpt2")
    model, example = arch.build(), arch.example()
    assert model.config.use_cache  # the model's own setting is left as it is
    space = SearchSpace.from_model(model, example, output="logits")
    up = "transformer.h.0.mlp.c_fc"
    assert space.layers[up].methods == ["prune", "lowrank", "quant"]
    small = apply_policy(model, Policy(layers={up: {"prune": 0.5}}), example, space=space)
    mlp = small.transformer.h[0].mlp
    assert isinstance(mlp.c_fc, nn.Linear) and mlp.c_fc.out_features == mlp.c_proj.in_features == 64
    assert logits(small, example).shape == logits(model, example).shape


def test_a_channel_group_that_never_settles_is_left_alone_not_a_hang() -> None:
    """Llama's rotary embeddings make Torch-Pruning's index mapping loop without end on q/k."""
    import time

    arch = next(a for a in ARCHITECTURES if a.name == "llama")
    model, example = arch.build(), arch.example()
    start = time.perf_counter()
    space = SearchSpace.from_model(model, example, output="logits")
    assert time.perf_counter() - start < 60
    q = space.layers["model.layers.0.self_attn.q_proj"]
    assert q.methods == ["lowrank", "quant"] and "do not settle" in q.reasons["prune"]
    assert space.layers["model.layers.0.mlp.gate_proj"].methods == ["prune", "lowrank", "quant"]
