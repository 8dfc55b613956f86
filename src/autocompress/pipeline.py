"""``compress(model, task, target=..., max_drop=...)``: from your model and data to a file to deploy.

One call runs what the rest of the library offers, in this order (every step is stored in one
SQLite file or PostgreSQL database, so the same call resumes where an interrupted one stopped):

1. **Checks** — the target in the one budget grammar (:mod:`autocompress.budget`); the model is
   run on the first batch of every split, and the loss and metric on its output, so that a loader
   yielding the wrong shapes or dtypes fails here with the shapes named. ``output="auto"`` picks
   what the metric reads: the tensor itself, a ``logits`` field, else the first tensor
   (:mod:`autocompress.checks`).
2. **Space** — :meth:`SearchSpace.from_model` (for an ONNX Runtime CPU latency target, kept channels
   are rounded to multiples of 8: its convolutions run blocks of 8 channels and a remainder falls back
   to a slower kernel). A latency target becomes a FLOPs budget (at :data:`LATENCY_MARGIN` of the
   target, for measurement noise) through the *measured* latency of the uniform policy at a few strengths (:mod:`autocompress.hardware.measured_path`; timed whole, side by
   side with the original, ``runtime="ort-cpu"``, batch ``latency_batch``, one thread).
3. **Learning rate** — unless ``lr`` is given, in two rungs on the uniform policy at the target:
   fine-tuned for ``finetune_steps`` at each of :data:`LEARNING_RATES` (the best on the validation
   split is the search's rate), then the :data:`LONG_PROBES` best for ``final_finetune`` steps (the
   best is the final fine-tune's rate). A short fine-tune favours a low rate that a long one does
   not: on a ``transformers`` MobileNetV2 (digits, 25 % of the FLOPs) 1e-3 and 3e-3 scored 91.0 / 90.75
   after 100 steps and 94.5 / 96.5 after 400. The long rung's winner is the uniform policy's
   final-stage result, so the uniform model is always among the finalists. These
   ``len(LEARNING_RATES) + LONG_PROBES`` evaluations count in the budget.
4. **Search** — the ``allocate`` strategy (per-layer allocations evolved *on* the budget: every
   candidate fills it; generation 0 is the uniform policy) at three budgets, milder than, equal to
   and stronger than the target, so the front spans mild to strong compression. Every candidate is
   fine-tuned for ``finetune_steps`` and, for a latency target, its latency measured whole. For a
   latency target the budget is FLOPs (``fill="flops"``, the default: the FLOPs at which the uniform
   policy measured the target) or the measured latency itself (``fill="measured"``: each allocation
   is timed whole at a few FLOPs around that and the least compressed meeting the budget is taken;
   :class:`~autocompress.hardware.measured_path.MeasuredLatency`).
5. **Final fine-tune** — the ``finalists`` best candidates meeting the target (default 1) get
   ``final_finetune`` steps (the last rung of successive halving, :func:`~autocompress.search.confirm`),
   beside the uniform policy's long learning-rate trial (a finalist already).

The methods: channel pruning for latency, FLOPs, MACs and parameter targets (the change that
makes a model faster on every runtime we measured); pruning and weight bits for BitOps and byte
targets; int8 is decided at export (:func:`autocompress.export.export`, through ``Candidate.export``), where it is measured.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from torch import nn

from autocompress.budget import BudgetError, Constraint, parse_bound
from autocompress.calls import OutputSelector, fit_inputs, split_example
from autocompress.checks import TaskError, auto_output, check_task
from autocompress.policy import Policy
from autocompress.result import CompressResult
from autocompress.search.study import Study
from autocompress.space import SearchSpace
from autocompress.task import Task
from autocompress.task.streamed import describe_value

__all__ = ["FINAL_EPOCHS", "FINAL_STEPS", "LATENCY_MARGIN", "LEARNING_RATES", "LONG_PROBES", "compress"]

#: learning rates tried on the uniform policy when ``lr="auto"`` (Adam, cosine decay)
LEARNING_RATES = (1e-4, 1e-3, 3e-3)
#: how many of the best rates after the short fine-tune are tried again with the final fine-tune's length
LONG_PROBES = 2
#: the final fine-tune's length (epochs of the train loader, within FINAL_STEPS): a pruned
#: MobileNetV2 (digits, 40 % of the FLOPs) scored 93.25 / 95.75 / 98.0 % val after 400 / 1,200 / 2,400
#: steps at lr 1e-3 and 99.5 % after 1,200 at 3e-3 (original 97.25 %); a ResNet was level from 400
#: (benchmarks/final_finetune.py, docs/results.md)
FINAL_EPOCHS, FINAL_STEPS = 75.0, (1000, 5000)
#: a latency target is filled at this fraction of it: a policy at the edge measures on either side of
#: it from run to run (0.159 and 0.140 for one at 0.15, busy machine), and a finalist must meet it
LATENCY_MARGIN = 0.95
#: the search's three budgets, as multiples of the target's ratio: milder, the target, stronger
LADDER = (0.5, 1.0, 1.5)  # exponents: t**0.5, t, t**1.5
#: how a latency target's allocations are filled (compress's ``fill``)
FILLS = ("auto", "measured", "flops")


def _auto_steps(task: Task, epochs: float, low: int, high: int) -> int:
    try:
        per_epoch = task.steps_per_epoch()
    except ValueError:  # a loader without a length
        return high
    return int(min(high, max(low, math.ceil(epochs * per_epoch))))


def _fields(space: SearchSpace, cost: str) -> tuple[str, ...]:
    from autocompress.search.ladders import gene_ladders

    wanted = ("prune", "weight_bits") if cost in ("bitops", "bytes") else ("prune",)
    for fields in (wanted, (*wanted, "rank"), ("rank",)):
        if gene_ladders(space, fields):
            return fields
    raise BudgetError(f"no layer of the model can be compressed for a {cost} target: {space.excluded}")


def _ladder(bound: Constraint) -> list[str]:
    if bound.is_ratio:
        values = sorted({min(1.0, bound.bound ** e) for e in LADDER}, reverse=True)
    else:
        values = [bound.bound * f for f in (1.5, 1.0, 0.7)]
    return [f"{bound.key}<={v:.6g}" for v in values]


def _latency_budgets(model: nn.Module, space: SearchSpace, example: Any, ladders: list, bound: Constraint,
                     latency: dict[str, Any], study: Study, console: Console, fill: str = "flops") -> tuple[Constraint, list[str], str | None, list]:
    """The FLOPs budget whose measured latency meets ``bound``, the ladder's targets (FLOPs ratios, or for
    ``fill="measured"`` the latency ratios themselves), a note when out of reach, and the measured path.

    The uniform policy's measured latency path (:mod:`autocompress.hardware.measured_path`) is kept in the
    study, so a resumed call measures nothing again."""
    from autocompress.hardware.measured_path import STRENGTHS, flops_for, measure_path
    from autocompress.search.ladders import at_strength

    stored = study.meta.get("latency_path")
    if stored is None:
        console.print(f"[dim]measuring the uniform policy's latency at {len(STRENGTHS)} strengths on {latency['runtime']} "
                      f"(batch {latency['batch']}, 1 thread, side by side with the original)[/dim]")
        policies = [at_strength(space, ladders, [0.0] * len(ladders), s) for s in STRENGTHS]
        points, original_ms = measure_path(model, space, example, policies, batch=latency["batch"])
        stored = {"points": points, "original_ms": original_ms}
        study.set_meta(latency_path=stored)
    points = stored["points"]
    ratio = (bound.bound if bound.is_ratio else bound.bound / stored["original_ms"]) * LATENCY_MARGIN
    flops, fastest = flops_for(points, ratio)
    note = None
    if flops is None:
        flops = min(p[0] for p in points)
        note = (f"the target is out of reach by pruning alone: the most pruned uniform model measured "
                f"{fastest:.3g}x the original's latency (needs {bound})")
    ladder = []
    for exponent in LADDER:
        found, _ = flops_for(points, ratio ** exponent)
        if found is not None:
            ladder.append(f"latency_ratio<={ratio ** exponent:.6g}" if fill == "measured" else f"flops_ratio<={found:.6g}")
    return Constraint("flops_ratio", "<=", flops), sorted(set(ladder), reverse=True), note, points


def _name(model: nn.Module, task: Task, bound: Constraint, seed: int, settings: dict[str, Any]) -> str:
    """The study's name: the model class, target and seed, and a digest of the model's weights, the first
    validation batch and the search settings, so a changed model, data or setting never resumes another's study."""
    from autocompress.files import weights_digest

    inputs, targets = next(iter(task.loader("val", shuffle=False)))
    digest = hashlib.sha1(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    digest.update(weights_digest(model).encode())
    for tensor in [*split_example(inputs)[0], targets]:
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return f"compress-{type(model).__name__}-{bound.key}{bound.op}{bound.bound:g}-seed{seed}-{digest.hexdigest()[:10]}"


def compress(  # noqa: PLR0913 - the one call: its knobs have defaults chosen by benchmark
    model: nn.Module,
    task: Task,
    *,
    target: str = "latency_ratio<=0.5",
    max_drop: float = 1.0,
    budget: int = 24,
    storage: str | Path = "runs/compress.db",
    study: str | None = None,
    runtime: str = "ort-cpu",
    latency_batch: int = 32,
    output: OutputSelector | str = "auto",
    channel_multiple: int | str = "auto",
    finetune_steps: int | None = None,
    final_finetune: int | None = None,
    finalists: int = 1,
    fill: str = "auto",
    lr: float | str = "auto",
    seed: int = 0,
    workers: int = 1,
    progress: bool = True,
    console: Console | None = None,
) -> CompressResult:
    """Compress ``model`` for ``target`` losing at most ``max_drop`` of ``task``'s metric (see the module docstring).

    ``fill`` (latency targets): ``"flops"`` (the default, ``"auto"``) — allocations fill the FLOPs budget at
    which the uniform policy measured the target; ``"measured"`` — every allocation is timed whole and
    filled to the latency budget (not the default until it measures better: docs/results.md). ``budget``: candidates evaluated (learning-rate trials included); ``finetune_steps`` /
    ``final_finetune``: training steps per candidate / per finalist (default: 3 / :data:`FINAL_EPOCHS`
    epochs of the train loader, within 100-400 / :data:`FINAL_STEPS` steps). The user's model is never changed. Run the same
    call again (same storage) to resume or to read the stored result without training anything.
    """
    from autocompress.search.confirm import confirm, confirm_study_name
    from autocompress.search.ladders import cost_value, gene_ladders, project
    from autocompress.search.runner import search
    from autocompress.search.strategies.allocate import AllocateStrategy
    from autocompress.search.strategies.given import GivenStrategy

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(task, Task):
        raise TypeError(f"task must be an autocompress.Task (Task.from_loaders(train, val, test) for DataLoaders), got {type(task).__name__}")
    bound = parse_bound(target)
    if bound.cost is None or not bound.upper:
        raise BudgetError(f"target {target!r} must bound a cost from above, e.g. 'latency_ratio<=0.5', 'latency_ms<=2', "
                          "'flops_ratio<=0.25' or 'params<=1e5'; the metric is bounded by max_drop")
    if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) or not max_drop >= 0:
        raise ValueError(f"max_drop must be a number >= 0 (points of the metric), got {max_drop!r}")
    probes = 0 if lr != "auto" else len(LEARNING_RATES) + LONG_PROBES
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < probes + 3:
        raise ValueError(f"budget must be an int >= {probes + 3} (the learning-rate trials and at least 3 candidates), got {budget!r}")
    if lr != "auto" and not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr must be 'auto' or a positive number, got {lr!r}")
    if finalists < 1:
        raise ValueError(f"finalists must be >= 1, got {finalists}")
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {list(FILLS)}, got {fill!r}")
    fill = "flops" if fill == "auto" else fill
    console = console or Console()

    example = fit_inputs(model, task.example_input(1))
    if output == "auto":
        inputs, targets = next(iter(task.loader("train", shuffle=False)))
        try:
            output = auto_output(model, fit_inputs(model, inputs))
        except TaskError:
            raise
        except Exception as error:  # noqa: BLE001 - reported with the shapes that caused it
            raise TaskError(f"the model on the first batch of the train split (inputs {describe_value(inputs)}, targets "
                            f"{describe_value(targets)}) fails: {type(error).__name__}: {error}") from error
    check_task(model, task, output)
    cost = bound.cost
    if channel_multiple == "auto":  # ONNX Runtime's CPU convolutions run blocks of 8 channels: a remainder is slow
        channel_multiple = 8 if cost == "latency" and runtime.startswith("ort-cpu") else 1
    space = SearchSpace.from_model(model, example, output=output, channel_multiple=channel_multiple)
    fields = _fields(space, cost)
    ladders = gene_ladders(space, fields)
    steps = finetune_steps or _auto_steps(task, 3.0, 100, 400)
    final_steps = final_finetune or _auto_steps(task, FINAL_EPOCHS, *FINAL_STEPS)
    name = study or _name(model, task, bound, seed, {"steps": steps, "final": final_steps, "lr": lr, "runtime": runtime,
                                                      "batch": latency_batch, "multiple": channel_multiple, "output": str(output), "fill": fill})
    objectives = ["accuracy", "latency" if cost == "latency" else cost]
    latency, notes, budget_bound, ladder, measurer = None, [], bound, None, None
    if cost == "latency":
        latency = {"runtime": runtime, "batch": latency_batch, "threads": 1, "repeats": 20}
        budget_bound, ladder, note, points = _latency_budgets(model, space, example, ladders, bound, latency,
                                                              Study.open(storage, name, objectives=objectives), console, fill)
        notes += [note] if note else []
        if fill == "measured":
            from autocompress.hardware.measured_path import MeasuredLatency

            measurer = MeasuredLatency(model, space, example, points, batch=latency_batch)
    else:
        ladder = _ladder(bound)
    key = "flops" if cost == "latency" else cost
    base = cost_value(space, Policy(), key)
    uniform, closest, reached = project(space, ladders, [0.0] * len(ladders), key,
                                        budget_bound.bound * base if budget_bound.is_ratio else budget_bound.bound)
    if not reached:
        notes.append(f"the target is out of reach: the most compressed model the legal choices allow has "
                     f"{budget_bound.key}={closest / base if budget_bound.is_ratio else closest:.4g} (needs {budget_bound})")
    common = dict(storage=storage, seed=seed, workers=workers, progress=progress, console=console, latency=latency)
    settings = {"finetune_epochs": 0.0, "finetune_steps": steps, "lr": lr, "seed": seed, "device": "auto"}

    def uniform_at(rate: float, length: int, study_name: str) -> float:
        """The uniform policy fine-tuned for ``length`` steps at ``rate``: its validation metric."""
        probe = search(model, task, space, objectives=objectives, strategy="given", strategy_params={"policies": [uniform]},
                       budget=1, study_name=study_name, finetune_epochs=0.0,
                       evaluator={"finetune_steps": length, "lr": rate}, **common)
        done = probe.completed()
        return done[0].values["metric"] if done else -math.inf

    def final_key(rate: float) -> dict[str, Any]:  # the settings confirm() names its companion study by
        return {"finetune_epochs": 0.0, "seed": seed, "finetune_steps": final_steps, "lr": rate}

    final_lr, probed = lr, []  # probed: (study, steps) of every learning-rate trial
    if lr == "auto":
        short = {}
        for rate in LEARNING_RATES:
            probed.append((f"{name}/lr-{rate:g}", steps))
            short[rate] = uniform_at(rate, steps, probed[-1][0])
        settings["lr"] = max(LEARNING_RATES, key=lambda r: (short[r], -r))
        long = {}
        for rate in sorted(LEARNING_RATES, key=lambda r: (-short[r], r))[:LONG_PROBES]:
            # in the companion study that confirm() opens for this rate: the uniform finalist is not trained twice
            probed.append((confirm_study_name(name, final_key(rate)), final_steps))
            long[rate] = uniform_at(rate, final_steps, probed[-1][0])
        final_lr = max(long, key=lambda r: (long[r], -r))
        console.print("learning rate: " + ", ".join(f"{r:g} -> {s:.2f}" for r, s in short.items())
                      + f" after {steps} steps; " + ", ".join(f"{r:g} -> {s:.2f}" for r, s in long.items())
                      + f" after {final_steps}; using {settings['lr']:g}, then {final_lr:g} for the final fine-tune")

    strategy = AllocateStrategy(targets=ladder, fields=fields, latency=measurer) if reached and ladder else GivenStrategy([uniform])
    found = search(model, task, space, objectives=objectives, constraints=[str(bound)], strategy=strategy,
                   budget=budget - probes, study_name=name, finetune_epochs=0.0,
                   evaluator={"finetune_steps": steps, "lr": settings["lr"]}, **common)
    final_settings = {**settings, "finetune_steps": final_steps, "lr": final_lr}
    final_name = confirm_study_name(found, final_key(final_lr))
    found.set_meta(compress={"target": str(bound), "max_drop": max_drop, "settings": settings, "final_settings": final_settings},
                   lr_studies=[{"study": n, "steps": k} for n, k in probed if n != final_name])

    result = CompressResult(found, None, model, task, space, bound, float(max_drop), settings, final_settings, latency_batch, notes)
    try:
        result.final = confirm(found, model, task, space, constraints=[str(bound)], top=finalists, finetune_epochs=0.0,
                               evaluator={"finetune_steps": final_steps, "lr": final_lr},
                               **{k: v for k, v in common.items() if k != "storage"})
    except LookupError as error:  # nothing met the target: everything is saved, the result says how close
        result.notes.append(str(error))
        if lr == "auto":  # the uniform policy's long learning-rate trial is a finalist all the same
            result.final = Study.open(storage, final_name, objectives=objectives)
    console.print(result.summary())
    return result

