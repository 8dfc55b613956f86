"""Sequential freezing of low-rank factors during fine-tuning (arXiv 2309.12412, section 3.3).

A factorized layer (:class:`~autocompress.transforms.lowrank.LowRank`) is a chain of 2-3
smaller layers. Training all factors at once is redundant (the product has a scale
freedom between them) and pays the weight gradients of every factor. Sequential freezing
trains them in turn: for ``period`` steps the *outer* factors (the first and, for Tucker-2,
the last) are frozen and the rest learn; for the next ``period`` steps the inner/last factor
is frozen and the outer ones learn. Frozen parameters get no gradient (their weight
gradient is never computed) and the optimizer skips them.

The fine-tune's option ``freeze="sequential"`` (``freeze_period`` steps per phase) turns it on:
``train(model, task, freeze="sequential")``, ``Evaluator(task, freeze="sequential")``, a search's
``evaluator: {freeze: sequential}`` (:func:`frozen_in_turn` is what ``train`` runs). By hand,
with :func:`autocompress.finetune.train`'s ``on_step``::

    train(model, task, epochs=1, on_step=alternate_factors(model))
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from torch import nn

from autocompress.transforms.lowrank import LowRank


def factor_phases(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(outer-factor parameters, inner/last-factor parameters) of every LowRank in ``model``.

    SVD (2 factors): outer = factor 0, inner = factor 1. Tucker-2 (3 factors): outer =
    factors 0 and 2, inner = the core (factor 1).
    """
    outer: list[nn.Parameter] = []
    inner: list[nn.Parameter] = []
    for module in model.modules():
        if isinstance(module, LowRank):
            factors = list(module)
            outer_ids = {0, len(factors) - 1} if len(factors) == 3 else {0}
            for index, factor in enumerate(factors):
                (outer if index in outer_ids else inner).extend(p for p in factor.parameters() if p.requires_grad)
    return outer, inner


def alternate_factors(model: nn.Module, period: int = 1) -> Callable[[int], None]:
    """An ``on_step`` callback freezing the outer and the inner factors in turn, ``period`` steps each.

    Parameters outside factorized layers always train. Raises ValueError when ``model``
    has no factorized layer or ``period`` < 1.
    """
    if period < 1:
        raise ValueError(f"period must be >= 1 step, got {period}")
    outer, inner = factor_phases(model)
    if not outer or not inner:
        raise ValueError("alternate_factors: the model has no factorized (LowRank) layer to freeze in turn")

    def on_step(step: int) -> None:
        freeze_outer = (step // period) % 2 == 0
        for p in outer:
            p.requires_grad_(not freeze_outer)
        for p in inner:
            p.requires_grad_(freeze_outer)

    return on_step


def unfreeze_factors(model: nn.Module) -> None:
    """Make every factor trainable again (after training with :func:`alternate_factors`)."""
    for module in model.modules():
        if isinstance(module, LowRank):
            for p in module.parameters():
                p.requires_grad_(True)


@contextlib.contextmanager
def frozen_in_turn(model: nn.Module, period: int = 1) -> Iterator[Callable[[int], None] | None]:
    """:func:`alternate_factors`'s ``on_step`` for a ``with`` block; the factors it froze train again on exit.

    Yields None (nothing to freeze) when ``model`` has no factorized layer, so that a fine-tune
    of a policy without low rank trains as it would without the option.
    """
    outer, inner = factor_phases(model)
    if not outer or not inner:
        yield None
        return
    on_step = alternate_factors(model, period)
    try:
        yield on_step
    finally:
        for p in outer + inner:  # exactly those that were trainable before
            p.requires_grad_(True)
