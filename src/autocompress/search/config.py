"""The search configuration (YAML), validated with pydantic.

```yaml
zoo: mnist1d-cnn                 # a bundled model and its task; or both of:
# model: mypackage.models:trained_model   # a function returning the trained nn.Module
# task: mypackage.data:make_task          # a function returning an autocompress.Task
# elastic: mypackage.nets:trained_supernet  # strategy apq: a function returning a trained elastic supernet
#                                           # (docs/elastic.md); without `model`, its largest sub-network is the model
objectives: [accuracy, flops]    # 1-3 of: accuracy, flops, macs, params, bitops, bytes, latency
constraints: ["accuracy_drop<=2.0"]
strategy: genecai                # random, uniform, greedy, nsga2, genecai, allocate, seernet, predicted, apq, given, targeted-lowrank
strategy_params: {population: 16}
budget: 200                      # real evaluations, over every resume
storage: runs/study.db           # a file (SQLite) or an RDB URL (postgresql://...)
study: mnist1d-genecai
seed: 0
workers: 1
finetune_epochs: 1.0
evaluator: {lr: 0.001, distill: 0.0, freeze: none}   # freeze: sequential trains low-rank factors in turn
space: {methods: [prune, lowrank, quant], exclude: [], activations: static}   # dynamic: see examples/minilm.yaml
latency: {batch: 32, threads: 1, runtime: ort-cpu, estimate: false}   # estimate: lookup tables; ort-cpu: static int8 as deployed; ort-cpu-int8: dynamic int8 as deployed
```

Unknown keys are errors; every error names the field and what is allowed.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from torch import nn

from autocompress.search.objectives import OBJECTIVES, Constraint
from autocompress.search.strategies import STRATEGIES
from autocompress.space import SearchSpace
from autocompress.task import Task

Method = Literal["prune", "lowrank", "quant"]


class ConfigError(ValueError):
    """The search configuration is invalid."""


class SpaceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    methods: list[Method] = ["prune", "lowrank", "quant"]
    exclude: list[str] = []
    exclude_output: bool = True
    prune_choices: list[float] | None = None
    prune_step: float | None = Field(None, gt=0, le=0.5, description="shorthand: prune choices 0, step, 2·step, ... <= 0.95")
    rank_choices: list[float] | None = None
    weight_bits_choices: list[int] | None = None
    act_bits_choices: list[int] | None = None
    channel_multiple: int = Field(1, ge=1)
    rank_multiple: int = Field(1, ge=1)
    activations: Literal["static", "dynamic"] = Field(
        "static", description="dynamic: per-call input ranges, act_bits = weight_bits (ONNX Runtime dynamic int8)")

    def kwargs(self) -> dict[str, Any]:
        values = {k: v for k, v in self.model_dump().items() if v is not None}
        step = values.pop("prune_step", None)
        if step is not None:
            if "prune_choices" in values:
                raise ConfigError("space: give prune_choices or prune_step, not both")
            values["prune_choices"] = [round(i * step, 6) for i in range(int(0.95 / step + 1e-9) + 1)]
        return values


class EvaluatorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lr: float = Field(1e-3, gt=0)
    distill: float = Field(0.0, ge=0, le=1)
    temperature: float = Field(4.0, gt=0)
    bn_batches: int = Field(20, ge=1)
    calibration_batches: int = Field(8, ge=1)
    finetune_steps: int | None = Field(None, ge=0)
    split: Literal["train", "val", "test"] = "val"
    device: str = "auto"
    freeze: str = Field("none", description="sequential: the fine-tune trains the factors of low-rank layers in turn")
    freeze_period: int = Field(1, ge=1, description="training steps per phase of freeze: sequential")

    @field_validator("freeze")
    @classmethod
    def _known_freeze(cls, value: str) -> str:
        from autocompress.finetune import check_freeze

        check_freeze(value, 1)  # the period is its own field's
        return value


class LatencyConfig(BaseModel):
    """How a candidate's latency is obtained: measured whole (default) or estimated from lookup tables."""

    model_config = ConfigDict(extra="forbid")

    batch: int = Field(32, ge=1)
    threads: int = Field(1, ge=1)
    repeats: int = Field(30, ge=1)
    runtime: str = Field("ort-cpu", description="ort-cpu (quantized layers in static int8, as export --int8 writes "
                         "them), ort-cpu-int8 (dynamic int8, as export_dynamic_int8 writes them), torch-cpu or torch-cuda")
    estimate: bool = Field(False, description="per-layer lookup table + calibrated overhead instead of a measurement")

    @field_validator("runtime")
    @classmethod
    def _known_runtime(cls, value: str) -> str:
        from autocompress.hardware.targets import RUNTIMES

        if value not in RUNTIMES:
            raise ValueError(f"unknown runtime {value!r}; allowed: {', '.join(RUNTIMES)}")
        return value


class SearchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    zoo: str | None = None
    model: str | None = Field(None, description="module:function returning the trained nn.Module")
    task: str | None = Field(None, description="module:function returning an autocompress.Task")
    elastic: str | None = Field(None, description="module:function returning a trained elastic supernet (strategy apq)")
    directories: list[str] = Field([], description="folders importable for module:function references (the YAML file's "
                                                   "folder and the current directory always are)")
    objectives: list[str] = ["accuracy", "flops"]
    constraints: list[str] = []
    strategy: str = "genecai"
    strategy_params: dict[str, Any] = {}
    budget: int = Field(100, ge=1)
    storage: str = "runs/study.db"
    study: str = "autocompress"
    seed: int = 0
    workers: int = Field(1, ge=1)
    finetune_epochs: float = Field(1.0, ge=0)
    evaluator: EvaluatorConfig = EvaluatorConfig()
    space: SpaceConfig = SpaceConfig()
    latency: LatencyConfig | None = None
    _supernet: nn.Module | None = PrivateAttr(None)

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, value: list[str]) -> list[str]:
        unknown = [v for v in value if v not in OBJECTIVES]
        if unknown:
            raise ValueError(f"unknown objective(s) {unknown}; allowed: {', '.join(OBJECTIVES)}")
        if not 1 <= len(value) <= 3:
            raise ValueError(f"give 1 to 3 objectives, got {len(value)}")
        return value

    @field_validator("constraints")
    @classmethod
    def _constraints(cls, value: list[str]) -> list[str]:
        for text in value:
            Constraint.parse(text)
        return value

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, value: str) -> str:
        if value not in STRATEGIES:
            raise ValueError(f"unknown strategy {value!r}; allowed: {', '.join(STRATEGIES)}")
        return value

    @model_validator(mode="after")
    def _source(self) -> SearchConfig:
        if self.zoo is None and (self.task is None or (self.model is None and self.elastic is None)):
            raise ValueError("give either `zoo: <name>` or both `model: module:function` and `task: module:function` "
                             "(with `elastic: module:function`, `model` may be left out: the supernet's largest sub-network)")
        if self.zoo is not None and (self.model or self.task):
            raise ValueError("give either `zoo` or `model` + `task`, not both")
        return self

    # ---------------------------------------------------------------- loading
    def evaluator_kwargs(self) -> dict[str, Any]:
        return {"finetune_epochs": self.finetune_epochs, "seed": self.seed, **self.evaluator.model_dump(exclude_none=True)}

    def build(self) -> tuple[nn.Module, Task, SearchSpace]:
        """The model, task and search space this configuration describes."""
        model, task = self.load_model_and_task()
        try:
            space = SearchSpace.from_model(model, task.example_input(), **self.space.kwargs())
        except ValueError as error:
            raise ConfigError(f"space: {error}") from error
        return model, task, space

    def load_elastic(self) -> nn.Module | None:
        """The elastic supernet ``elastic`` names (loaded once per configuration), or None."""
        if self.elastic is None:
            return None
        if self._supernet is None:
            from autocompress.elastic import ElasticModel

            supernet = resolve(self.elastic, "elastic", tuple(self.directories))()
            if not isinstance(supernet, ElasticModel):
                raise ConfigError(f"elastic: {self.elastic} returned {type(supernet).__name__}, not an elastic supernet "
                                  "(choices, forward(x, config), extract, stage_layers: docs/elastic.md)")
            self._supernet = supernet
        return self._supernet

    def load_model_and_task(self) -> tuple[nn.Module, Task]:
        if self.zoo is not None:
            from autocompress.zoo import list_zoo, load_zoo

            if self.zoo not in list_zoo():
                raise ConfigError(f"zoo: unknown model {self.zoo!r}; allowed: {', '.join(list_zoo())}")
            entry = load_zoo(self.zoo, pretrained=True, seed=self.seed, progress=True)
            return entry.model, entry.task
        make_model = resolve(self.model, "model", tuple(self.directories)) if self.model is not None else None
        task = resolve(self.task, "task", tuple(self.directories))()
        if not isinstance(task, Task):
            raise ConfigError(f"task: {self.task} returned {type(task).__name__}, not an autocompress.Task")
        if make_model is None:  # the elastic supernet's largest sub-network, BatchNorm statistics re-estimated
            from autocompress.finetune import recalibrate_batchnorm

            supernet = self.load_elastic()
            model = supernet.extract(supernet.largest())
            recalibrate_batchnorm(model, task, batches=self.evaluator.bn_batches, seed=self.seed)
            return model.eval(), task
        model = make_model()
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model: {self.model} returned {type(model).__name__}, not an nn.Module")
        return model, task


SECTIONS: dict[str, type[BaseModel]] = {"evaluator": EvaluatorConfig, "space": SpaceConfig, "latency": LatencyConfig}


def importable(*directories: str | Path) -> None:
    """Put ``directories`` (and the current directory) on ``sys.path`` so ``module:function`` references
    to the user's own files import without ``PYTHONPATH``."""
    for directory in (*directories, Path.cwd()):
        text = str(Path(directory).resolve())
        if text not in sys.path:
            sys.path.insert(0, text)


def load_user_objects(model_ref: str, task_ref: str, directories: tuple[str | Path, ...] = ()) -> tuple[nn.Module, Task]:
    """The user's model and task from two ``module:function`` references (``SearchConfig``'s checks)."""
    return SearchConfig(model=model_ref, task=task_ref, directories=[str(d) for d in directories]).load_model_and_task()


def resolve(reference: str, field: str, directories: tuple[str | Path, ...] = ()) -> Any:
    """Import ``module:attribute`` (the current directory and ``directories`` are importable)."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"{field}: {reference!r} is not of the form 'module:function'")
    importable(*directories)
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"{field}: cannot import module {module_name!r} ({error})") from error
    if not hasattr(module, attribute):
        raise ConfigError(f"{field}: module {module_name!r} has no attribute {attribute!r}")
    return getattr(module, attribute)


def load_config(source: str | Path | dict[str, Any]) -> SearchConfig:
    """Read and validate a YAML file (or a dict); errors name the field and what is allowed."""
    if isinstance(source, dict):
        data, where = source, "config"
    else:
        path = Path(source)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path} is not valid YAML: {error}") from error
        where = str(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the top level must be a mapping of settings")
    if not isinstance(source, dict):  # the YAML file's own folder is importable for module:function
        data = {**data, "directories": [*data.get("directories", []), str(Path(source).resolve().parent)]}
    try:
        return SearchConfig.model_validate(data)
    except ValidationError as error:
        lines = []
        for item in error.errors():
            field = ".".join(str(p) for p in item["loc"]) or "config"
            message = item["msg"].removeprefix("Value error, ")
            if item["type"] == "extra_forbidden":
                section = SECTIONS.get(str(item["loc"][0]), SearchConfig) if len(item["loc"]) > 1 else SearchConfig
                allowed = ", ".join(section.model_fields)
                message = f"unknown key; allowed: {allowed}"
            lines.append(f"{field}: {message}")
        raise ConfigError(f"{where}: " + "; ".join(lines)) from None
