"""SearchSpace: which layers of a model can be compressed, how, and what a policy costs.

``SearchSpace.from_model(model, example_input)`` runs the model once, finds its
Conv1d/Conv2d/Linear layers, groups layers whose channels are coupled (through
Torch-Pruning's DependencyGraph) and lists every layer it leaves alone with the reason
(:mod:`autocompress.discovery`). It never changes the model. The space holds the legal choices
and genes, validates policies and encodes them as vectors (and back).

The space also holds a small analytic model of the network (channel counts, spatial
sizes, parameter shapes) so that :meth:`SearchSpace.cost` gives the exact cost of a
policy *without building the compressed model*: the same numbers as
:func:`autocompress.cost.count_cost` on ``apply_policy(model, policy)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from torch import nn

from autocompress.analytic import CostRow, layer_costs, linear_cost
from autocompress.calls import Example, OutputSelector, split_example
from autocompress.cost import FP32_BITS, CostReport, LayerCost
from autocompress.discovery import METHODS, LayerInfo, discover_layers
from autocompress.policy import MAX_PRUNE, InputSpec, LayerGenes, Policy, recorded_output
from autocompress.quiet import collected_warnings
from autocompress.transforms.prune import ChannelGroup

DEFAULT_PRUNE_CHOICES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT_RANK_CHOICES = (1.0, 0.75, 0.5, 0.375, 0.25, 0.125)
DEFAULT_WEIGHT_BITS = (32, 8, 6, 4, 3, 2)
DEFAULT_ACT_BITS = (32, 8, 6, 4)
FIELDS = ("prune", "rank", "weight_bits", "act_bits")


class PolicyError(ValueError):
    """A policy does not fit the model's search space."""


@dataclass(frozen=True)
class Gene:
    layer: str
    field: str
    choices: tuple[float, ...]


class SearchSpace:
    """Compressible layers of a model, their coupled channel groups and legal choices."""

    def __init__(self) -> None:  # use SearchSpace.from_model
        self.layers: dict[str, LayerInfo] = {}
        self.groups: dict[str, ChannelGroup] = {}
        self.excluded: dict[str, str] = {}
        self.inputs: tuple[InputSpec, ...] = ()
        #: the example's keyword names (``("input_ids", "attention_mask")``); None: positional inputs
        self.input_names: tuple[str, ...] | None = None
        #: which of the model's outputs is measured (``from_model(output=...)``); None: all of them
        self.output: OutputSelector = None
        self.choices: dict[str, tuple[float, ...]] = {}
        self.channel_multiple = 1
        self.rank_multiple = 1
        self.genes: list[Gene] = []
        #: "static" or "dynamic" (act_bits then follow weight_bits: no act_bits gene; see Policy.activations)
        self.activations = "static"
        self._rows: list[CostRow] = []
        self._row_index: dict[str, int] = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        example_input: Example,
        *,
        output: OutputSelector = None,
        exclude: Sequence[str] = (),
        exclude_output: bool = True,
        prune_choices: Sequence[float] = DEFAULT_PRUNE_CHOICES,
        rank_choices: Sequence[float] = DEFAULT_RANK_CHOICES,
        weight_bits_choices: Sequence[int] = DEFAULT_WEIGHT_BITS,
        act_bits_choices: Sequence[int] = DEFAULT_ACT_BITS,
        channel_multiple: int = 1,
        rank_multiple: int = 1,
        methods: Sequence[str] = METHODS,
        activations: str = "static",
    ) -> SearchSpace:
        """Discover the compressible layers of ``model`` (left untouched).

        ``example_input``: a tensor, a tuple of positional tensors or a dict of keyword tensors
        (``{"input_ids": ids, "attention_mask": mask}``). ``output``: which of the model's outputs is
        measured when it returns a tuple, dict or ``ModelOutput`` (a key such as ``"logits"``, an
        index, or a callable); None keeps them all. ``transformers``' ``Conv1D`` layers (GPT-2) are
        handled as the Linear layers they are (see :mod:`autocompress.layers`).
        ``exclude``: layer names or glob patterns left alone. ``exclude_output``: leave
        the last Conv/Linear layer to run (the output layer) alone. ``methods``: the
        compression methods searched, a subset of ("prune", "lowrank", "quant"). ``channel_multiple``
        and ``rank_multiple`` round kept channels and ranks to hardware-friendly multiples.
        ``activations``: "static" (calibrated input ranges, a separate act_bits gene) or "dynamic"
        (each call's own range, act_bits = weight_bits: what ONNX Runtime's dynamic int8 runs).
        """
        if activations not in ("static", "dynamic"):
            raise ValueError(f"activations must be 'static' or 'dynamic', got {activations!r}")
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        for name, value in (("channel_multiple", channel_multiple), ("rank_multiple", rank_multiple)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        unknown = set(methods) - set(METHODS)
        if unknown or not methods:
            raise ValueError(f"methods must be a non-empty subset of {list(METHODS)}, got {list(methods)}")
        inputs, input_names = split_example(example_input)
        space = cls()
        space.inputs = InputSpec.of_example(example_input)
        space.input_names, space.output = input_names, output
        space.channel_multiple, space.rank_multiple = int(channel_multiple), int(rank_multiple)
        space.activations = activations
        space.choices = {
            "prune": _checked_choices("prune", prune_choices, lambda v: 0 <= v <= MAX_PRUNE),
            "rank": _checked_choices("rank", rank_choices, lambda v: 0 < v <= 1),
            "weight_bits": tuple(LayerGenes(weight_bits=int(b)).weight_bits for b in weight_bits_choices),
            "act_bits": tuple(LayerGenes(act_bits=int(b)).act_bits for b in act_bits_choices),
        }
        with collected_warnings("tracing the model"):
            found = discover_layers(model, inputs, input_names=input_names, output=output, exclude=exclude,
                                    exclude_output=exclude_output, methods=methods, activations=activations)
            space.layers, space.groups, space.excluded = found.layers, found.groups, found.excluded
            space._rows, space._row_index = found.rows, {r.name: i for i, r in enumerate(found.rows)}
            space.genes = space._make_genes()
        return space

    def _make_genes(self) -> list[Gene]:
        genes = []
        for name, info in self.layers.items():
            tied = self.activations == "dynamic"
            allowed = {"prune": info.prunable, "rank": info.decomposable, "weight_bits": info.quantizable,
                       "act_bits": info.quantizable and not tied}
            genes += [Gene(name, f, self._legal(name, f)) for f in FIELDS if allowed[f]]
        return genes

    def _legal(self, layer: str, field: str) -> tuple[float, ...]:
        """The choices of ``field`` legal on ``layer``: a group of attention heads keeps at least one."""
        choices = self.choices[field]
        group = self.groups.get(layer)
        if field != "prune" or group is None or group.multiple <= 1:
            return choices
        return tuple(c for c in choices if round((1.0 - c) * group.units) >= 1)

    # ------------------------------------------------------------------ policies
    def validate(self, policy: Policy | dict) -> Policy:
        """Return ``policy`` as a Policy if it fits this space, else raise PolicyError."""
        if not isinstance(policy, Policy):
            policy = Policy.from_dict(policy)
        if policy.activations != self.activations and any(g.weight_bits < 32 or g.act_bits < 32 for g in policy.layers.values()):
            raise PolicyError(
                f"the policy quantizes with {policy.activations} activation ranges but this search space uses "
                f"{self.activations} ones; set the policy's 'activations' to {self.activations!r}"
            )
        for name, genes in policy.layers.items():
            if name not in self.layers:
                why = self.excluded.get(name)
                if why:
                    if genes.is_identity:
                        continue
                    raise PolicyError(f"layer '{name}' is left uncompressed ({why}); remove it from the policy")
                known = ", ".join(self.layers) or "none"
                raise PolicyError(f"unknown layer '{name}' in policy; compressible layers: {known}")
            info = self.layers[name]
            if genes.prune > 0 and not info.prunable:
                raise PolicyError(f"layer '{name}', field 'prune': must be 0 here ({info.reasons.get('prune', '')})")
            if genes.prune > 0:
                self.kept_channels(name, genes.prune, warn=False)  # a head group must keep a head
            if genes.rank < 1 and not info.decomposable:
                raise PolicyError(f"layer '{name}', field 'rank': must be 1.0 here ({info.reasons.get('lowrank', '')})")
            if (genes.weight_bits, genes.act_bits) != (32, 32) and not info.quantizable:
                raise PolicyError(f"layer '{name}', fields 'weight_bits'/'act_bits': must be 32 here ({info.reasons.get('quant', '')})")
            if self.activations == "dynamic" and genes.act_bits != genes.weight_bits:
                raise PolicyError(
                    f"layer '{name}': with dynamic activations act_bits must equal weight_bits "
                    f"(got weight_bits={genes.weight_bits}, act_bits={genes.act_bits})"
                )
        if policy.inputs is None:
            policy = policy.model_copy(update={"inputs": self.inputs})
        if policy.output is None and recorded_output(self) is not None:
            policy = policy.model_copy(update={"output": recorded_output(self)})
        return policy

    def kept_channels(self, group: str, prune: float, warn: bool = True) -> int:
        """Channels of ``group`` kept under prune ratio ``prune`` (at least one).

        A group of attention heads (``multiple`` > 1) keeps ``round((1 - prune) · heads)``
        whole heads; a ratio that removes every head is a :class:`PolicyError`.
        """
        info = self.groups[group]
        channels = info.channels
        if info.multiple > 1:
            heads = round((1.0 - prune) * info.units)
            if heads < 1:
                raise PolicyError(
                    f"layer '{group}', field 'prune': {prune} removes every attention head ({info.units} heads of "
                    f"{info.multiple} channels); at least one must stay (prune < {1 - 0.5 / info.units:.4g})"
                )
            return heads * info.multiple
        keep = round((1.0 - prune) * channels)
        multiple = self.channel_multiple
        if multiple > 1:
            keep = min(channels, max(multiple, multiple * round(keep / multiple)))
        if keep < 1:
            if warn:
                warnings.warn(
                    f"prune={prune} would remove every channel of '{group}' ({channels}); keeping 1",
                    stacklevel=3,
                )
            keep = 1
        return keep

    def channel_plan(self, policy: Policy, warn: bool = True) -> dict[str, int]:
        """Channels removed per group leader."""
        plan = {}
        for name, genes in policy.layers.items():
            if genes.prune > 0 and name in self.groups:
                plan[name] = self.groups[name].channels - self.kept_channels(name, genes.prune, warn)
        return plan

    def multiples(self) -> dict[str, int]:
        """Group leader -> channels removed together (attention heads), for ``prune_groups``."""
        return {name: g.multiple for name, g in self.groups.items() if g.multiple > 1}

    def random_policy(self, rng: np.random.Generator | int | None = None) -> Policy:
        """A policy with every gene drawn uniformly from its legal choices."""
        rng = np.random.default_rng(rng)
        vector = np.array([g.choices[rng.integers(len(g.choices))] for g in self.genes], dtype=float)
        return self.decode(vector)

    def encode(self, policy: Policy) -> np.ndarray:
        """Policy -> vector of raw gene values, in the order of ``self.genes``."""
        return np.array([getattr(policy.genes(g.layer), g.field) for g in self.genes], dtype=float)

    def decode(self, vector: Sequence[float] | np.ndarray, snap: bool = True) -> Policy:
        """Vector -> Policy; ``snap`` moves each value to its nearest legal choice.

        ``decode(encode(p)) == p`` for every policy whose genes are legal choices.
        """
        vector = np.asarray(vector, dtype=float)
        if vector.shape != (len(self.genes),):
            raise ValueError(f"expected a vector of {len(self.genes)} genes, got shape {vector.shape}")
        values: dict[str, dict[str, float]] = {}
        for gene, value in zip(self.genes, vector, strict=True):
            if snap:
                value = min(gene.choices, key=lambda c: (abs(c - value), c))
            values.setdefault(gene.layer, {})[gene.field] = int(round(value)) if gene.field.endswith("bits") else float(value)
        if self.activations == "dynamic":
            for genes in values.values():
                if "weight_bits" in genes:
                    genes["act_bits"] = genes["weight_bits"]
        layers = {name: LayerGenes(**genes) for name, genes in values.items()}
        return Policy(layers=layers, inputs=self.inputs, activations=self.activations, output=recorded_output(self))

    # ------------------------------------------------------------------ cost
    def cost(self, policy: Policy) -> CostReport:
        """Exact per-sample cost of ``apply_policy(model, policy)``, without building it."""
        rows = self.pruned_rows(policy)
        costs: list[LayerCost] = []
        for row in rows:
            genes = policy.layers.get(row.name)
            if row.kind in ("conv", "linear"):
                costs += layer_costs(row, genes, self.rank_multiple)
            elif row.kind == "norm":
                n = row.out_channels * row.params
                costs.append(linear_cost(row.name, row.type, 0, 0, n, FP32_BITS, FP32_BITS))
            else:
                costs.append(linear_cost(row.name, row.type, 0, 0, row.params, FP32_BITS, FP32_BITS))
        return CostReport(tuple(costs))

    def pruned_rows(self, policy: Policy) -> list[CostRow]:
        """Every parameter/MAC module's row with the channels ``policy``'s pruning leaves (before low rank)."""
        rows = [replace(r) for r in self._rows]
        index = self._row_index
        for leader, removed in self.channel_plan(policy, warn=False).items():
            for member in self.groups[leader].members:
                row = rows[index[member.module]]
                count = removed * member.per_channel
                if member.role in ("out", "both"):
                    row.out_channels -= count
                if member.role == "in" or (member.role == "both" and row.kind == "conv"):
                    row.in_channels -= count
                if member.role == "both" and row.kind == "conv":
                    row.groups -= count
        return rows

    # ------------------------------------------------------------------ reporting
    def describe(self) -> list[dict[str, object]]:
        """One row per Conv/Linear/weight layer: what applies, and why not."""
        base = {c.name: c for c in self.cost(Policy()).layers}
        rows = []
        for name, info in self.layers.items():
            c = base.get(name)
            rows.append(
                {
                    "layer": name,
                    "type": info.type,
                    "shape": _shape_text(info),
                    "params": c.params if c else 0,
                    "flops": c.flops if c else 0,
                    "bitops": c.bitops if c else 0,
                    "methods": info.methods,
                    "group": info.group,
                    "why_not": "; ".join(f"{m}: {r}" for m, r in info.reasons.items()),
                }
            )
        for name, why in self.excluded.items():
            c = base.get(name)
            rows.append(
                {
                    "layer": name,
                    "type": "",
                    "shape": "",
                    "params": c.params if c else 0,
                    "flops": c.flops if c else 0,
                    "bitops": c.bitops if c else 0,
                    "methods": [],
                    "group": None,
                    "why_not": why,
                }
            )
        return rows


def _shape_text(info: LayerInfo) -> str:
    if info.type == "Linear":
        return f"{info.in_channels}→{info.out_channels}"
    kernel = "×".join(map(str, info.kernel_size))
    groups = f" g{info.groups}" if info.groups > 1 else ""
    return f"{info.in_channels}→{info.out_channels} k{kernel}{groups}"


def _checked_choices(name: str, values: Sequence[float], ok: object) -> tuple[float, ...]:
    values = tuple(float(v) for v in values)
    bad = [v for v in values if not ok(v)]
    if not values or bad:
        raise ValueError(f"{name}_choices must be a non-empty list of legal values; not allowed: {bad}")
    return values


__all__ = ["SearchSpace", "Gene", "PolicyError"]
