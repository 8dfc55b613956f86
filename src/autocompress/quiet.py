"""Warnings raised by a user's model (or by torch) while we trace or export it, summarised once.

Tracing a ``transformers`` model raises dozens of ``TracerWarning``s ("Converting a tensor to a
Python boolean ...") that say nothing the user can act on. :func:`collected_warnings` records every
warning raised inside it and, at the end, issues one :class:`ThirdPartyWarnings` that says how many
there were and from where (the three most frequent places). Nested uses report once, at the outermost.
"""

from __future__ import annotations

import functools
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["ThirdPartyWarnings", "collected_warnings", "summarising"]

_depth = [0]
SHOWN_PLACES = 3


class ThirdPartyWarnings(UserWarning):
    """The summary of the warnings raised by third-party code while autocompress traced or exported a model."""


def _place(record: warnings.WarningMessage) -> str:
    path = Path(record.filename)
    parts = path.parts
    where = "/".join(parts[parts.index("site-packages") + 1:]) if "site-packages" in parts else path.name
    return f"{record.category.__name__} from {where}:{record.lineno}"


def summary(records: list[warnings.WarningMessage], what: str) -> str:
    places = Counter(_place(r) for r in records)
    shown = ", ".join(f"{count}x {place}" for place, count in places.most_common(SHOWN_PLACES))
    more = f" and {len(places) - SHOWN_PLACES} more places" if len(places) > SHOWN_PLACES else ""
    first = str(records[0].message).splitlines()[0][:160]
    return f"{len(records)} warnings from third-party code while {what} ({shown}{more}); the first: {first}"


@contextmanager
def collected_warnings(what: str) -> Iterator[list[warnings.WarningMessage]]:
    """Record the warnings raised inside; at the end warn once with their summary (``what``: the step)."""
    if _depth[0]:
        _depth[0] += 1
        try:
            yield []
        finally:
            _depth[0] -= 1
        return
    _depth[0] += 1
    try:
        with warnings.catch_warnings(record=True) as records:
            warnings.simplefilter("always")
            yield records
    finally:
        _depth[0] -= 1
    own = [r for r in records if issubclass(r.category, ThirdPartyWarnings) or "autocompress" in r.filename]
    foreign = [r for r in records if r not in own]
    for record in own:  # our own warnings are shown as they are
        warnings.warn_explicit(record.message, record.category, record.filename, record.lineno)
    if foreign:
        warnings.warn(summary(foreign, what), ThirdPartyWarnings, stacklevel=3)


def summarising(what: str) -> Callable[[Callable], Callable]:
    """Decorator: the function's third-party warnings come back as one summary (see :func:`collected_warnings`)."""

    def decorate(function: Callable) -> Callable:
        @functools.wraps(function)
        def wrapper(*args: object, **kwargs: object) -> object:
            with collected_warnings(what):
                return function(*args, **kwargs)

        return wrapper

    return decorate
