"""Plots of a search, written headless (Agg) as PNG files.

- :func:`plot_front`: every candidate in grey, the Pareto front highlighted and joined by its
  attainment staircase, the original model marked;
- :func:`plot_curves`: one mean line with a ± band per series (e.g. hypervolume vs number of
  evaluations per strategy).

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot, no global state)
and written atomically: a temporary file in the target folder, then ``os.replace``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from autocompress.files import atomic_write

FIGSIZE = (6.4, 4.8)  # inches
DPI = 150  # -> 960 x 720 pixels
CANDIDATE_COLOR = "#c4c4c4"
FRONT_COLOR = "tab:blue"
ORIGINAL_COLOR = "tab:red"


def _points_2d(all_points: np.ndarray) -> np.ndarray:
    pts = np.asarray(all_points, dtype=float)
    if pts.ndim == 1 and pts.size == 0:
        pts = pts.reshape(0, 2)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"all_points must have shape (n, 2), got {pts.shape}")
    return pts


def _front_mask(front_mask: np.ndarray, n: int) -> np.ndarray:
    mask = np.asarray(front_mask)
    if mask.dtype != bool:
        raise ValueError(
            f"front_mask must be a boolean mask (e.g. from non_dominated), got dtype {mask.dtype}"
        )
    if mask.shape != (n,):
        raise ValueError(f"front_mask has shape {mask.shape} but there are {n} points")
    return mask


def _labels(annotate: Sequence[str] | None, n: int) -> list[str] | None:
    if annotate is None:
        return None
    labels = [str(a) for a in annotate]
    if len(labels) != n:
        raise ValueError(
            f"annotate has {len(labels)} labels but there are {n} points (one per point)"
        )
    return labels


def _original(original: tuple[float, float] | None) -> tuple[float, float] | None:
    if original is None:
        return None
    values = np.asarray(original, dtype=float)
    if values.shape != (2,) or not np.isfinite(values).all():
        raise ValueError(f"original must be two finite numbers (x, y), got {original!r}")
    return float(values[0]), float(values[1])


def _save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))


def _finish(fig: Figure, ax: Axes, x_label: str, y_label: str, title: str | None, path: str | Path) -> Path:
    """Labels, title, grid and legend, then save."""
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return _save(fig, path)


def _draw_front(ax: Axes, pts: np.ndarray, labels: list[str] | None, x_direction: str) -> None:
    """Front points joined by the staircase bounding what they attain."""
    order = np.lexsort((pts[:, 1], pts[:, 0]))
    front = pts[order]
    if len(front) > 1:
        where = "post" if x_direction == "minimize" else "pre"
        ax.step(
            front[:, 0],
            front[:, 1],
            where=where,
            color=FRONT_COLOR,
            linewidth=1.2,
            alpha=0.8,
            zorder=2,
        )
    ax.scatter(
        front[:, 0],
        front[:, 1],
        s=30,
        color=FRONT_COLOR,
        edgecolors="white",
        linewidths=0.5,
        label=f"Pareto front ({len(front)})",
        zorder=3,
    )
    for i, (x, y) in zip(order, front, strict=True):
        if labels is not None and labels[i]:
            ax.annotate(labels[i], (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7)


def plot_front(
    all_points: np.ndarray,
    front_mask: np.ndarray,
    *,
    x_label: str,
    y_label: str,
    path: str | Path,
    original: tuple[float, float] | None = None,
    title: str | None = None,
    annotate: Sequence[str] | None = None,
    log_x: bool = False,
    x_direction: str = "minimize",
) -> Path:
    """Scatter of all candidates with the front highlighted; returns the PNG's path.

    ``annotate`` holds one label per point; only the front's (non-empty) labels are drawn.
    ``x_direction`` (the x objective's direction) orients the staircase joining the front.
    Non-finite points are not drawn.
    """
    pts = _points_2d(all_points)
    mask = _front_mask(front_mask, len(pts))
    labels = _labels(annotate, len(pts))
    marker = _original(original)
    if x_direction not in ("minimize", "maximize"):
        raise ValueError(f"x_direction must be 'minimize' or 'maximize', got {x_direction!r}")
    finite = np.isfinite(pts).all(axis=1)
    if log_x and ((pts[finite, 0] <= 0).any() or (marker is not None and marker[0] <= 0)):
        raise ValueError("log_x needs every x value to be positive")

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(
        pts[finite, 0],
        pts[finite, 1],
        s=14,
        color=CANDIDATE_COLOR,
        label=f"candidates ({int(finite.sum())})",
        zorder=1,
    )
    if (mask & finite).any():
        _draw_front(ax, pts[mask & finite], _subset(labels, mask & finite), x_direction)
    if marker is not None:
        ax.scatter(
            [marker[0]],
            [marker[1]],
            marker="*",
            s=240,
            color=ORIGINAL_COLOR,
            edgecolors="black",
            linewidths=0.6,
            label="original model",
            zorder=4,
        )
    if log_x:
        ax.set_xscale("log")
    return _finish(fig, ax, x_label, y_label, title, path)


def _subset(labels: list[str] | None, mask: np.ndarray) -> list[str] | None:
    return (
        None
        if labels is None
        else [label for label, keep in zip(labels, mask, strict=True) if keep]
    )


def _curve_arrays(name: str, series: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    if len(series) != 3:
        raise ValueError(f"curve {name!r} must be (x, mean, std or None), got {len(series)} items")
    x, mean, std = series
    x = np.asarray(x, dtype=float).reshape(-1)
    mean = np.asarray(mean, dtype=float).reshape(-1)
    if x.shape != mean.shape:
        raise ValueError(f"curve {name!r}: x has {x.size} values but mean has {mean.size}")
    if std is not None:
        std = np.asarray(std, dtype=float).reshape(-1)
        if std.shape != mean.shape:
            raise ValueError(f"curve {name!r}: std has {std.size} values but mean has {mean.size}")
    return x, mean, std


def plot_curves(
    curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]],
    *,
    x_label: str,
    y_label: str,
    path: str | Path,
    title: str | None = None,
) -> Path:
    """One line per series (x, mean) with a mean ± std band when std is given; returns the path."""
    if not curves:
        raise ValueError("curves is empty: give at least one series")
    checked = {name: _curve_arrays(name, series) for name, series in curves.items()}
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    for name, (x, mean, std) in checked.items():
        (line,) = ax.plot(x, mean, linewidth=1.5, label=name)
        if std is not None:
            ax.fill_between(
                x, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0
            )
    return _finish(fig, ax, x_label, y_label, title, path)
