"""Save and load compressed models as *policy + state_dict* (no pickled modules).

A saved directory holds:

- ``policy.json`` — the policy, with the example input's shape and dtype;
- ``state_dict.pt`` — the compressed model's tensors (loaded with ``weights_only=True``);
- ``meta.json`` — format version, costs and metrics (written last: its presence marks a
  complete save).

``load(directory, model)`` rebuilds the compressed architecture by applying the policy
to the original ``model`` (which is not changed) and loads the saved tensors into it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress.apply import POLICY_ATTRIBUTE, apply_policy
from autocompress.calls import OutputSelector, example_to
from autocompress.cost import count_cost
from autocompress.evaluate import EvalResult
from autocompress.files import atomic_write
from autocompress.policy import Policy
from autocompress.space import SearchSpace

FORMAT = "autocompress/1"


def save(obj: nn.Module | EvalResult, directory: str | Path, *, policy: Policy | None = None) -> Path:
    """Save a compressed model (from ``apply_policy``) or an ``EvalResult`` to ``directory``."""
    metrics: dict[str, Any] = {}
    if isinstance(obj, EvalResult):
        if obj.model is None:
            raise ValueError("this EvalResult holds no model (it was loaded from a study); rebuild it first")
        model, policy = obj.model, obj.policy
        metrics = {k: v for k, v in obj.to_dict().items() if k != "policy"}
    elif isinstance(obj, nn.Module):
        model = obj
        policy = policy or getattr(obj, POLICY_ATTRIBUTE, None)
        if policy is None:
            raise ValueError("this model was not made by apply_policy: pass policy=... to save it")
    else:
        raise TypeError(f"save() takes a compressed nn.Module or an EvalResult, got {type(obj).__name__}")
    if policy.inputs is None:
        raise ValueError("the policy records no example input shape; make it from a SearchSpace")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "meta.json").unlink(missing_ok=True)  # an interrupted save leaves no meta
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    atomic_write(directory / "policy.json", lambda tmp: Path(tmp).write_text(policy.to_json()))
    atomic_write(directory / "state_dict.pt", lambda tmp: torch.save(state, tmp))
    example = policy.example_input()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    cost = count_cost(model, example_to(example, device)).as_dict()
    meta = {"format": FORMAT, "torch": torch.__version__, "cost": cost, **metrics}
    atomic_write(directory / "meta.json", lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2)))
    return directory


def load(directory: str | Path, model: nn.Module, *, output: OutputSelector = None) -> nn.Module:
    """Rebuild the compressed model saved in ``directory`` from the original ``model``.

    ``output``: the output selector the model was compressed with when it was a callable (a key
    or an index is recorded in the policy).

    A candidate of the ``apq`` strategy (its policy names a sub-network, ``policy.arch``) is
    rebuilt from the elastic supernet it was searched on: pass that supernet as ``model``."""
    directory = Path(directory)
    meta_path = directory / "meta.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{directory} holds no complete autocompress save (meta.json is missing)")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{directory}: unknown format {meta.get('format')!r}; this version reads {FORMAT}")
    policy = Policy.load(directory / "policy.json")
    if policy.arch is not None:
        from autocompress.elastic import ElasticModel, SubnetConfig

        if not isinstance(model, ElasticModel):
            raise ValueError(f"{directory} holds a sub-network of an elastic supernet (its policy has `arch`): "
                             f"pass that supernet as `model`, not a {type(model).__name__}")
        model = model.extract(SubnetConfig.from_vector(policy.arch))
    space = None if output is None else SearchSpace.from_model(model, policy.example_input(), output=output)
    small = apply_policy(model, policy, space=space)
    state = torch.load(directory / "state_dict.pt", map_location="cpu", weights_only=True)
    device = next((p.device for p in small.parameters()), torch.device("cpu"))
    try:
        small.load_state_dict({k: v.to(device) for k, v in state.items()})
    except RuntimeError as error:
        raise ValueError(
            f"the tensors in {directory} do not fit the model rebuilt from its policy: is `model` "
            f"the same original model it was compressed from? ({error})"
        ) from error
    return small.eval()
