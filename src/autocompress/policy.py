"""Policy: what to do to every compressible layer, as plain JSON-serializable data.

A policy maps a layer name (as in ``model.named_modules()``) to its genes:

- ``prune``: fraction of the layer's output channels/units removed, 0 to 0.95. It is
  only legal on a layer that leads a channel group (see :class:`~autocompress.space.SearchSpace`):
  coupled layers (residual adds, depthwise chains) lose the same channels together.
- ``rank``: fraction of full rank kept when the layer is factorized (SVD for Linear and
  1x1 convs, Tucker-2 for kxk convs); 1.0 means the layer is not factorized.
- ``weight_bits`` / ``act_bits``: 2 to 8, or 32 for unquantized.

A layer missing from the policy is left as it is. ``inputs`` records the shape and dtype
of the example input the policy was made for, so that it can be applied (and a saved
model rebuilt) without the caller passing an example again.

``arch`` (APQ, :mod:`autocompress.elastic`): the sub-network of an elastic supernet the
policy applies to, as ``SubnetConfig.to_vector()``; ``None`` (the default, left out of the
JSON) means the search's own model. Its layer names are then the extracted sub-network's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)

from autocompress.calls import Example, join_example, split_example

if TYPE_CHECKING:
    from autocompress.space import SearchSpace

ALLOWED_BITS = (2, 3, 4, 5, 6, 7, 8, 32)
MAX_PRUNE = 0.95


def check_bits(value: int, field: str = "bits") -> int:
    """Return ``value`` if it is an allowed bit-width, else raise a clear ValueError."""
    allowed = isinstance(value, (int, float)) and not isinstance(value, bool) and value in ALLOWED_BITS
    if not allowed:
        raise ValueError(f"{field} must be one of {list(ALLOWED_BITS)} (32 = unquantized), got {value!r}")
    return int(value)


def recorded_output(space: object) -> str | int | None:
    """The space's output selector as a policy records it: a key or an index (a callable is not data)."""
    output = getattr(space, "output", None)
    return output if isinstance(output, (str, int)) and not isinstance(output, bool) else None


def _without_none(data: dict[str, Any], key: str) -> dict[str, Any]:
    """``data`` without ``key`` when it is None (a field added later leaves older JSON unchanged)."""
    if data.get(key, 0) is None:
        del data[key]
    return data


class LayerGenes(BaseModel):
    """The compression genes of one layer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prune: float = Field(0.0, ge=0.0, le=MAX_PRUNE, description="fraction of output channels removed")
    rank: float = Field(1.0, gt=0.0, le=1.0, description="fraction of full rank kept (1 = not factorized)")
    weight_bits: int = Field(32, description="weight bit-width: 2..8, or 32 for fp32")
    act_bits: int = Field(32, description="input-activation bit-width: 2..8, or 32 for fp32")

    @field_validator("weight_bits", "act_bits", mode="before")
    @classmethod
    def _bits(cls, value: Any, info: Any) -> int:
        return check_bits(value, info.field_name)

    @property
    def is_identity(self) -> bool:
        return self.prune == 0 and self.rank >= 1.0 and self.weight_bits == 32 and self.act_bits == 32


class InputSpec(BaseModel):
    """Shape and dtype of one positional model input (batch dimension first)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shape: tuple[int, ...]
    dtype: str = "float32"
    #: the model's keyword for this input (``input_ids``); None: positional
    name: str | None = None

    @model_serializer(mode="wrap")
    def _drop_unset_name(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Positional inputs serialize (and hash into study keys) as before ``name`` existed."""
        return _without_none(handler(self), "name")

    @classmethod
    def of(cls, tensor: torch.Tensor, name: str | None = None) -> InputSpec:
        return cls(shape=tuple(tensor.shape), dtype=str(tensor.dtype).removeprefix("torch."), name=name)

    @classmethod
    def of_example(cls, example: Example) -> tuple[InputSpec, ...]:
        """The specs of an example input (a tensor, positional tensors or keyword tensors)."""
        tensors, names = split_example(example)
        return tuple(cls.of(t, names[i] if names else None) for i, t in enumerate(tensors))

    def make(self, seed: int = 0) -> torch.Tensor:
        """A deterministic tensor of this spec (random normal floats, zeros for integers)."""
        dtype = getattr(torch, self.dtype)
        if dtype.is_floating_point:
            generator = torch.Generator().manual_seed(seed)
            return torch.randn(self.shape, generator=generator).to(dtype)
        return torch.zeros(self.shape, dtype=dtype)


class Policy(BaseModel):
    """Per-layer compression genes; JSON round-trips exactly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: dict[str, LayerGenes] = Field(default_factory=dict)
    inputs: tuple[InputSpec, ...] | None = None
    #: how quantized layers get their input ranges: "static" (calibrated, fixed at run time) or
    #: "dynamic" (each call's own min/max, as ONNX Runtime's dynamic int8 does for transformers)
    activations: Literal["static", "dynamic"] = "static"
    arch: tuple[float, ...] | None = Field(None, description="sub-network of an elastic supernet (APQ); None: the model")
    #: the model output the policy was measured on (``SearchSpace.from_model(output=...)``: a key or an
    #: index; a callable is not recorded); None: all of them
    output: str | int | None = None

    @model_serializer(mode="wrap")
    def _drop_unset_arch(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Policies of a fixed model serialize (and hash into study keys) as before ``arch`` and
        ``output`` existed."""
        return _without_none(_without_none(handler(self), "arch"), "output")

    # -- construction -------------------------------------------------------------------
    @classmethod
    def uniform(
        cls,
        space: SearchSpace,
        prune: float = 0.0,
        rank: float = 1.0,
        weight_bits: int = 32,
        act_bits: int = 32,
    ) -> Policy:
        """The same genes on every layer where the space allows them (a space with dynamic
        activations ties ``act_bits`` to ``weight_bits``)."""
        dynamic = getattr(space, "activations", "static") == "dynamic"
        if dynamic:
            act_bits = weight_bits
        layers = {}
        for name, info in space.layers.items():
            genes = {
                "prune": prune if info.prunable else 0.0,
                "rank": rank if info.decomposable else 1.0,
                "weight_bits": weight_bits if info.quantizable else 32,
                "act_bits": act_bits if info.quantizable else 32,
            }
            layers[name] = LayerGenes(**genes)
        return cls(layers=layers, inputs=space.inputs, activations="dynamic" if dynamic else "static",
                   output=recorded_output(space))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Policy:
        """From ``{"layers": {...}, "inputs": [...]}`` or a bare ``{layer: genes}`` mapping."""
        if not isinstance(data, dict):
            raise TypeError(f"a policy must be a mapping, got {type(data).__name__}")
        if "layers" not in data and "inputs" not in data:
            data = {"layers": data}
        return cls.model_validate(data)

    @classmethod
    def from_json(cls, text: str) -> Policy:
        return cls.from_dict(json.loads(text))

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        return cls.from_json(Path(path).read_text())

    # -- output ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)
        return path

    # -- queries -----------------------------------------------------------------------
    def genes(self, layer: str) -> LayerGenes:
        """Genes of ``layer`` (identity genes if the policy leaves it alone)."""
        return self.layers.get(layer, LayerGenes())

    def with_inputs(self, example_input: Example) -> Policy:
        return self.model_copy(update={"inputs": InputSpec.of_example(example_input)})

    def example_input(self) -> tuple[torch.Tensor, ...] | dict[str, torch.Tensor] | None:
        """A deterministic example of the recorded inputs: a dict for keyword inputs, else a tuple."""
        if self.inputs is None:
            return None
        tensors = tuple(spec.make(seed=i) for i, spec in enumerate(self.inputs))
        names = tuple(s.name for s in self.inputs) if all(s.name for s in self.inputs) else None
        return join_example(tensors, names)
