"""Training loop (budgeted, seeded, optional distillation), evaluation and BN recalibration."""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from autocompress.calls import Bound, call_model
from autocompress.task import Task, reduce
from autocompress.task.streamed import to_device
from autocompress.transforms.freezing import frozen_in_turn

__all__ = ["FREEZE", "OPTIMIZERS", "check_freeze", "evaluate_metric", "recalibrate_batchnorm", "resolve_device", "train"]

OPTIMIZERS = ("adam", "adamw", "sgd")
#: the fine-tune's ``freeze`` option: "none" (every parameter trains every step) or "sequential"
#: (the factors of low-rank layers trained in turn, arXiv 2309.12412 section 3.3; transforms/freezing.py)
FREEZE = ("none", "sequential")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; any other name is checked and returned."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'"
        ) from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} requested but CUDA is not available; use 'cpu' or 'auto'"
        )
    return resolved


def train(
    model: nn.Module,
    task: Task,
    *,
    epochs: float | None = None,
    steps: int | None = None,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    optimizer: str = "adam",
    teacher: nn.Module | None = None,
    distill_weight: float = 0.0,
    temperature: float = 4.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
    on_step: Callable[[int], None] | None = None,
    freeze: str = "none",
    freeze_period: int = 1,
) -> dict:
    """Train ``model`` in place on ``task.train`` for ``epochs`` (may be fractional) or ``steps``.

    Optimizer "adam" (default), "adamw" or "sgd" (momentum 0.9), cosine LR decay to 0 over the
    budget; only parameters with ``requires_grad`` are trained. With a ``teacher`` and
    ``distill_weight`` w > 0 the loss is ``(1-w)*task_loss + w*KD`` where KD is
    ``T^2 * KL(softmax(teacher/T) || softmax(student/T))`` for classification and the MSE to the
    teacher's outputs for regression. The teacher is run in eval mode, no grad, and left unchanged.
    Deterministic under ``seed``; the global RNG state is restored afterwards.
    ``on_step(step)`` is called before each step (e.g. to freeze some parameters for it:
    a parameter whose ``requires_grad`` is off gets no gradient and the optimizer skips it).
    ``freeze="sequential"``: the factors of every low-rank layer are trained in turn, ``freeze_period``
    steps per phase (outer factors frozen first; :func:`~autocompress.transforms.freezing.alternate_factors`,
    run before ``on_step``), and are all trainable again afterwards; a model without factorized
    layers trains as with ``"none"`` (the default: every parameter trains every step).
    Returns ``{"steps", "epochs", "seconds", "final_loss", "first_loss"}``.
    """
    dev = resolve_device(device)
    total_steps = budget_steps(task, epochs, steps)
    _check_distill(teacher, distill_weight, temperature)
    check_freeze(freeze, freeze_period)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("train: the model has no parameter with requires_grad=True")
    model.to(dev)
    teacher_model = _prepare_teacher(teacher, dev) if distill_weight > 0 else None
    task_loss_fn = task.loss_fn()
    losses: list[float] = []
    start = time.perf_counter()
    with (
        seeded_training(seed, dev),
        kept_modes(model),
        kept_modes(teacher_model),
        _progress(progress, total_steps) as bar,
        frozen_in_turn(model, freeze_period) if freeze == "sequential" else contextlib.nullcontext() as freezing,
    ):
        opt = _make_optimizer(optimizer, params, lr, weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: 0.5 * (1.0 + math.cos(math.pi * step / total_steps))
        )
        model.train()
        if teacher_model is not None:
            teacher_model.eval()
        hook = task.train_step
        for step, batch in enumerate(training_batches(task, seed, total_steps, raw=hook is not None)):
            if freezing is not None:
                freezing(step)
            if on_step is not None:
                on_step(step)
            if hook is not None:  # the user's own step: their batch, their model's own call and output
                loss = hook(unbound(model), to_device(batch, dev))
            else:
                inputs, targets = to_device(batch[0], dev), batch[1].to(dev)
                outputs = call_model(model, inputs)
                loss = task_loss_fn(outputs, targets)
                if teacher_model is not None:
                    with torch.no_grad():
                        teacher_out = call_model(teacher_model, inputs)
                    kd = _distill_loss(outputs, teacher_out, temperature, task.is_classification)
                    loss = (1.0 - distill_weight) * loss + distill_weight * kd
            if not isinstance(loss, Tensor) or loss.dim() != 0:
                raise TypeError(f"train: the training step must give a scalar loss tensor, got {type(loss).__name__}"
                                + (f" of shape {tuple(loss.shape)}" if isinstance(loss, Tensor) else ""))
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"train: loss became {loss.item()} at step {step} (lr={lr})"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            losses.append(float(loss.detach()))
            bar(step + 1, losses[-1])
    tail = losses[-min(10, len(losses)) :]
    return {
        "steps": total_steps,
        "epochs": _epochs(task, total_steps),
        "seconds": time.perf_counter() - start,
        "final_loss": sum(tail) / len(tail),
        "first_loss": losses[0],
    }


def evaluate_metric(
    model: nn.Module, task: Task, split: str = "val", device: str | torch.device = "cpu"
) -> float:
    """The task metric over the whole ``split``, in eval mode and without grad (modes restored).

    Built-in metrics are reduced batch by batch (exactly); a callable metric sees the whole split's
    outputs and targets at once; a task's ``evaluate(model, loader)`` hook replaces both.
    """
    if task.evaluate is not None:
        dev = resolve_device(device)
        model.to(dev)
        with kept_modes(model), torch.no_grad():
            model.eval()
            return float(task.evaluate(unbound(model), task.source(split)))
    return reduce(task.metric, task.metric_fn(), _outputs(model, task, split, device))


def evaluate_loss(
    model: nn.Module, task: Task, split: str = "val", device: str | torch.device = "cpu"
) -> float:
    """The task loss (e.g. mean cross-entropy) over the whole ``split``, in eval mode, without grad."""
    return reduce(task.loss, task.loss_fn(), _outputs(model, task, split, device))


def _outputs(model: nn.Module, task: Task, split: str, device: str | torch.device) -> Iterator[tuple[Tensor, Tensor]]:
    """(outputs, targets) of each batch of ``split`` on the CPU, in eval mode, without grad (modes restored)."""
    dev = resolve_device(device)
    model.to(dev)
    with kept_modes(model), torch.no_grad():
        model.eval()
        for inputs, targets in task.loader(split, shuffle=False):
            outputs = call_model(model, to_device(inputs, dev))
            if not isinstance(outputs, Tensor):
                raise TypeError(f"the model's output is a {type(outputs).__name__}, not a tensor: pick the one the "
                                "metric reads with output= (a key such as 'logits', an index or a callable)")
            yield outputs.float().cpu(), targets


def split_outputs(
    model: nn.Module, task: Task, split: str, device: str | torch.device
) -> tuple[Tensor, Tensor]:
    """(model outputs, targets) over the whole ``split`` on the CPU, in eval mode, without grad (modes restored)."""
    outputs, targets = zip(*_outputs(model, task, split, device), strict=True)
    return torch.cat(outputs), torch.cat(targets)


def recalibrate_batchnorm(
    model: nn.Module,
    task: Task,
    *,
    batches: int = 20,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> int:
    """Recompute BN running statistics from up to ``batches`` shuffled training batches.

    Running stats are reset and accumulated as a cumulative (equal-weight per batch) average;
    every other module stays in eval mode. Modes and momenta are restored. Returns the number of
    recalibrated BN layers (0, and nothing run, if the model has none).
    """
    if batches < 1:
        raise ValueError(f"recalibrate_batchnorm: batches must be >= 1, got {batches}")
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not norms:
        return 0
    dev = resolve_device(device)
    model.to(dev)
    momenta = [m.momentum for m in norms]
    try:
        with kept_modes(model), torch.no_grad():
            model.eval()
            for norm in norms:
                norm.reset_running_stats()
                norm.momentum = None
                norm.train()
            loader = task.loader("train", shuffle=True, seed=seed, drop_last=task.can_drop_last())
            for index, (inputs, _) in enumerate(loader):
                if index >= batches:
                    break
                call_model(model, to_device(inputs, dev))
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
    return len(norms)


# --- internals ---------------------------------------------------------------------------


def unbound(model: nn.Module) -> nn.Module:
    """The user's own module behind a :class:`~autocompress.calls.Bound` one (what hooks are given)."""
    return model.target if isinstance(model, Bound) else model


def _epochs(task: Task, steps: int) -> float | None:
    try:
        return steps / task.steps_per_epoch()
    except ValueError:  # a train loader without a length
        return None


def budget_steps(task: Task, epochs: float | None, steps: int | None) -> int:
    if epochs is not None and steps is not None:
        raise ValueError("train: give either epochs or steps, not both")
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"train: steps must be a positive int, got {steps!r}")
        return steps
    epochs = 1.0 if epochs is None else epochs
    if not epochs > 0:
        raise ValueError(f"train: epochs must be > 0, got {epochs!r}")
    return max(1, math.ceil(epochs * task.steps_per_epoch()))


def check_freeze(freeze: str, period: int) -> None:
    """Raise ValueError unless ``freeze`` is one of :data:`FREEZE` and ``period`` a positive number of steps."""
    if freeze not in FREEZE:
        raise ValueError(f"unknown freeze {freeze!r}; allowed: {', '.join(FREEZE)}")
    if isinstance(period, bool) or not isinstance(period, int) or period < 1:
        raise ValueError(f"freeze_period must be a positive int (training steps per phase), got {period!r}")


def _check_distill(teacher: nn.Module | None, weight: float, temperature: float) -> None:
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"train: distill_weight must be in [0, 1], got {weight}")
    if weight > 0 and teacher is None:
        raise ValueError("train: distill_weight > 0 needs a teacher model")
    if temperature <= 0:
        raise ValueError(f"train: temperature must be > 0, got {temperature}")


def _prepare_teacher(teacher: nn.Module | None, dev: torch.device) -> nn.Module | None:
    """The teacher on ``dev``; a copy when it lives elsewhere, so the user's is never moved."""
    if teacher is None:
        return None
    tensors = [*teacher.parameters(), *teacher.buffers()]
    if all(t.device == dev for t in tensors):
        return teacher
    return copy.deepcopy(teacher).to(dev)


def _distill_loss(
    student: Tensor, teacher: Tensor, temperature: float, classification: bool
) -> Tensor:
    if not classification:
        return F.mse_loss(student, teacher)
    log_p_student = F.log_softmax(student / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


def _make_optimizer(
    name: str, params: list, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"train: unknown optimizer {name!r}; allowed: {', '.join(OPTIMIZERS)}")


def training_batches(task: Task, seed: int, total_steps: int, raw: bool = False) -> Iterator:
    """``total_steps`` training batches, reshuffling each epoch from one seeded generator."""
    loader = task.loader("train", shuffle=True, seed=seed, drop_last=task.can_drop_last(), raw=raw)
    produced = 0
    while produced < total_steps:
        for batch in loader:
            yield batch
            produced += 1
            if produced == total_steps:
                return


@contextlib.contextmanager
def seeded_training(seed: int, dev: torch.device) -> Iterator[None]:
    devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def kept_modes(model: nn.Module | None) -> Iterator[None]:
    """Restore every submodule's train/eval flag on exit."""
    modes = [] if model is None else [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode


@contextlib.contextmanager
def _progress(enabled: bool, total: int) -> Iterator:
    """Yields ``update(step, loss)``; a rich progress bar when ``enabled``."""
    if not enabled:
        yield lambda step, loss: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=True) as bar:
        job = bar.add_task("train", total=total, loss=float("nan"))
        yield lambda step, loss: bar.update(job, completed=step, loss=loss)
