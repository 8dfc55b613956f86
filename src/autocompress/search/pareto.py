"""Pareto fronts and exact hypervolumes (pure numpy).

Every function takes points as an ``(n, d)`` array in the objectives' own units together with
one direction per column (``"minimize"`` or ``"maximize"``); internally everything is turned
into minimization by negating the maximized columns.

Dominance: ``a`` dominates ``b`` when ``a`` is no worse in every objective and strictly better
in at least one. Exact duplicates do not dominate each other. Rows holding NaN or ±inf are never
on a front and never add hypervolume.

Hypervolume algorithms (all exact):

- d = 1: ``reference - best``;
- d = 2: sort and sweep, O(n log n);
- d = 3: slicing along the third objective with an incrementally updated 2-D staircase
  (bisect insertion, amortized), O(n log n) comparisons plus list moves;
- d >= 4: dimension sweep along the last objective, adding each slice point's exclusive
  contribution ``box(p) - HV(limit(front, p))`` (the WFG idea), recursing down to d = 3.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np

DIRECTIONS = ("minimize", "maximize")


def _signs(directions: Sequence[str]) -> np.ndarray:
    """+1 for a minimized column, -1 for a maximized one."""
    if isinstance(directions, str):
        raise ValueError(
            f"directions must be a sequence with one of {DIRECTIONS} per objective, not the string {directions!r}"
        )
    directions = list(directions)
    if not directions:
        raise ValueError("directions is empty: give one direction per objective")
    bad = [d for d in directions if d not in DIRECTIONS]
    if bad:
        raise ValueError(f"unknown direction(s) {bad}; each must be 'minimize' or 'maximize'")
    return np.array([1.0 if d == "minimize" else -1.0 for d in directions])


def _as_points(points: np.ndarray, d: int) -> np.ndarray:
    """``points`` as a float ``(n, d)`` array (an empty 1-D input becomes ``(0, d)``)."""
    try:
        arr = np.asarray(points, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"points must be numeric: {exc}") from None
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, d)
    if arr.ndim != 2:
        raise ValueError(f"points must be a 2-D array of shape (n, d), got shape {arr.shape}")
    if arr.shape[1] != d:
        raise ValueError(f"points have {arr.shape[1]} column(s) but {d} direction(s) were given")
    return arr


def _as_bound(values: Sequence[float], signs: np.ndarray, name: str) -> np.ndarray:
    """A finite reference-like vector, in minimization form."""
    try:
        arr = np.asarray(values, dtype=float).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from None
    if arr.shape != signs.shape:
        raise ValueError(f"{name} has {arr.size} value(s) but {signs.size} direction(s) were given")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite, got {arr.tolist()}")
    return arr * signs


def to_minimization(points: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """A float copy of ``points`` with every ``"maximize"`` column negated."""
    signs = _signs(directions)
    return _as_points(points, signs.size) * signs


# --------------------------------------------------------------------------- fronts


def _nondominated_2d(pts: np.ndarray) -> np.ndarray:
    """Non-dominated mask of finite 2-D minimization points (duplicates kept), O(n log n)."""
    n = len(pts)
    order = np.lexsort((pts[:, 1], pts[:, 0]))
    xs, ys = pts[order, 0], pts[order, 1]
    prev_min = np.concatenate(([np.inf], np.minimum.accumulate(ys)[:-1]))
    # the first point (in sorted order) that reached the running minimum has the smallest x
    new_min = ys < prev_min
    holder = np.maximum.accumulate(np.where(new_min, np.arange(n), 0))
    holder_x = np.concatenate(([np.inf], xs[holder[:-1]]))
    dominated = (prev_min < ys) | ((prev_min == ys) & (holder_x < xs))
    mask = np.empty(n, dtype=bool)
    mask[order] = ~dominated
    return mask


def _nondominated_nd(pts: np.ndarray) -> np.ndarray:
    """Non-dominated mask of finite minimization points in any dimension.

    Points are visited in lexicographic order, so a point can only be dominated by one already
    seen, and (by transitivity) by one already on the front: each point is compared with the
    front so far only.
    """
    n, d = pts.shape
    order = np.lexsort(pts.T[::-1])
    front = np.empty((n, d))
    m = 0
    mask = np.zeros(n, dtype=bool)
    for i in order:
        p = pts[i]
        if m:
            le = (front[:m] <= p).all(axis=1)
            if le.any() and (front[:m][le] < p).any():
                continue
        front[m] = p
        m += 1
        mask[i] = True
    return mask


def _nondominated_min(pts: np.ndarray) -> np.ndarray:
    """Non-dominated mask of minimization points; non-finite rows are False."""
    mask = np.zeros(len(pts), dtype=bool)
    finite = np.flatnonzero(np.isfinite(pts).all(axis=1))
    if finite.size == 0:
        return mask
    sub = pts[finite]
    if sub.shape[1] == 1:
        mask[finite] = sub[:, 0] == sub[:, 0].min()
    elif sub.shape[1] == 2:
        mask[finite] = _nondominated_2d(sub)
    else:
        mask[finite] = _nondominated_nd(sub)
    return mask


def non_dominated(points: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Boolean mask ``(n,)``: True for the points no other point dominates."""
    return _nondominated_min(to_minimization(points, directions))


def pareto_front_indices(points: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Indices of the non-dominated points, sorted by the first objective's value (ascending;
    ties by the next objectives)."""
    signs = _signs(directions)
    values = _as_points(points, signs.size)
    index = np.flatnonzero(_nondominated_min(values * signs))
    return index[np.lexsort(values[index].T[::-1])]


# --------------------------------------------------------------------------- hypervolume


def _hv2(pts: np.ndarray, ref: np.ndarray) -> float:
    """2-D hypervolume by sort-and-sweep (points all strictly below ``ref``)."""
    order = np.lexsort((pts[:, 1], pts[:, 0]))
    xs, ys = pts[order, 0], pts[order, 1]
    prev_min = np.concatenate(([np.inf], np.minimum.accumulate(ys)[:-1]))
    keep = ys < prev_min
    xs, ys = xs[keep], ys[keep]
    widths = np.diff(np.append(xs, ref[0]))
    return float(np.dot(widths, ref[1] - ys))


def _insert_2d(xs: list[float], ys: list[float], x: float, y: float, rx: float, ry: float) -> float:
    """Insert ``(x, y)`` into a 2-D staircase (xs ascending, ys strictly descending) and return
    the area it adds (0 when it is weakly dominated)."""
    i = bisect.bisect_right(xs, x)
    if i and ys[i - 1] <= y:
        return 0.0
    s = bisect.bisect_left(xs, x)
    e = s
    while e < len(xs) and ys[e] >= y:
        e += 1
    old = 0.0
    for j in range(max(s - 1, 0), e):
        nxt = xs[j + 1] if j + 1 < len(xs) else rx
        old += (nxt - xs[j]) * (ry - ys[j])
    new = ((xs[e] if e < len(xs) else rx) - x) * (ry - y)
    if s:
        new += (x - xs[s - 1]) * (ry - ys[s - 1])
    xs[s:e] = [x]
    ys[s:e] = [y]
    return new - old


def _hv3(pts: np.ndarray, ref: np.ndarray) -> float:
    """3-D hypervolume by slicing along z with an incremental 2-D staircase."""
    pts = pts[np.argsort(pts[:, 2], kind="stable")]
    rx, ry, rz = (float(v) for v in ref)
    zs = pts[:, 2].tolist() + [rz]
    xs: list[float] = []
    ys: list[float] = []
    area = volume = 0.0
    for k, (x, y) in enumerate(pts[:, :2].tolist()):
        area += _insert_2d(xs, ys, x, y, rx, ry)
        volume += area * (zs[k + 1] - zs[k])
    return volume


def _exclusive(p: np.ndarray, front: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume that ``p`` adds to ``front``: box(p) - HV(limit(front, p))."""
    box = float(np.prod(ref - p))
    if not len(front):
        return box
    return box - _hv(np.maximum(front, p), ref)


def _hv_sweep(pts: np.ndarray, ref: np.ndarray) -> float:
    """d >= 4: sweep along the last objective, adding exclusive (d-1)-D contributions."""
    pts = pts[np.argsort(pts[:, -1], kind="stable")]
    zs = np.append(pts[:, -1], ref[-1])
    sub_ref = ref[:-1]
    front = np.empty((0, len(sub_ref)))
    area = volume = 0.0
    for k, p in enumerate(pts[:, :-1]):
        if not (front <= p).all(axis=1).any():
            area += _exclusive(p, front, sub_ref)
            front = np.vstack([front[~(p <= front).all(axis=1)], p])
        volume += area * (zs[k + 1] - zs[k])
    return volume


def _hv(pts: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume of finite minimization points that all lie strictly below ``ref``."""
    if not len(pts):
        return 0.0
    d = pts.shape[1]
    if d == 1:
        return float(ref[0] - pts[:, 0].min())
    if d == 2:
        return _hv2(pts, ref)
    if d == 3:
        return _hv3(pts, ref)
    pts = np.unique(pts[_nondominated_min(pts)], axis=0)
    return _hv_sweep(pts, ref)


def _dominating(pts: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """The finite rows strictly better than ``ref`` in every objective."""
    return pts[np.isfinite(pts).all(axis=1) & (pts < ref).all(axis=1)]


def hypervolume(points: np.ndarray, reference: Sequence[float], directions: Sequence[str]) -> float:
    """Exact hypervolume dominated by ``points`` and bounded by ``reference``.

    ``reference`` is in the objectives' own units: a lower bound for a maximized objective
    (e.g. accuracy 0), an upper bound for a minimized one (e.g. flops ratio 1). Points that do
    not strictly dominate the reference, and non-finite rows, contribute nothing.
    """
    signs = _signs(directions)
    pts = _as_points(points, signs.size) * signs
    ref = _as_bound(reference, signs, "reference")
    return _hv(_dominating(pts, ref), ref)


def normalized_hypervolume(
    points: np.ndarray,
    reference: Sequence[float],
    ideal: Sequence[float],
    directions: Sequence[str],
) -> float:
    """Hypervolume as a fraction of the box between ``ideal`` and ``reference``, in [0, 1].

    Each objective is mapped linearly so that ``ideal -> 0`` and ``reference -> 1`` (the box
    becomes the unit box, to be minimized); points better than the ideal are clipped to it.
    ``ideal`` must be strictly better than ``reference`` in every objective. 1 means a point
    at the ideal; 0 means no point dominates the reference.
    """
    signs = _signs(directions)
    pts = _as_points(points, signs.size) * signs
    ref = _as_bound(reference, signs, "reference")
    ideal_min = _as_bound(ideal, signs, "ideal")
    if not (ideal_min < ref).all():
        raise ValueError(
            f"ideal {list(ideal)} must be strictly better than reference {list(reference)} in every objective"
        )
    scaled = (np.maximum(pts, ideal_min) - ideal_min) / (ref - ideal_min)
    unit = np.ones(signs.size)
    return min(1.0, _hv(_dominating(scaled, unit), unit))


def hypervolume_curve(
    points_in_order: np.ndarray, reference: Sequence[float], directions: Sequence[str]
) -> np.ndarray:
    """Hypervolume of the first k points for k = 1..n (non-decreasing).

    Only a point that enlarges the front costs work: its exclusive contribution is added.
    """
    signs = _signs(directions)
    pts = _as_points(points_in_order, signs.size) * signs
    ref = _as_bound(reference, signs, "reference")
    curve = np.zeros(len(pts))
    front = np.empty((0, signs.size))
    total = 0.0
    for k, p in enumerate(pts):
        if np.isfinite(p).all() and (p < ref).all() and not (front <= p).all(axis=1).any():
            total += _exclusive(p, front, ref)
            front = np.vstack([front[~(p <= front).all(axis=1)], p])
        curve[k] = total
    return curve
