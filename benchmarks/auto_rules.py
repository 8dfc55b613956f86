"""Which rule should ``kind="auto"`` follow? Rules compared on the same splits of every label set.

    python benchmarks/auto_rules.py                 # every set of benchmarks/label_sets.py, 25/50/100 labels, 5 splits
    python benchmarks/auto_rules.py --sets ext-a --sizes 25 --splits 2   # smoke

For each (set, n, split) of :mod:`label_sets` (the same draws: fitted on n labels, τ on the rest), the
held-out predictions of ridge, GP, trees and ensemble and the out-of-fold predictions of ridge, GP and
trees on the training labels (4 folds, two assignments, as ``choose_kind``) are computed once
(cached in ``runs/auto_rules.pkl``); every rule then picks from the cross-validation alone and is
scored by the held-out τ of its pick. ``misses``: cells more than 0.02 below the best of ridge, GP,
trees and ensemble (the issue's bar). Writes benchmarks/results/auto_rules.md.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
from collections.abc import Callable
from pathlib import Path

import numpy as np
from label_sets import RESULTS, sets
from scipy import stats

from autocompress.predict import AccuracyPredictor
from autocompress.predict.choose import folds_of, out_of_fold

CV_KINDS = ("linear", "gp", "gbt")
HELD_KINDS = (*CV_KINDS, "ensemble")


def tau(y: np.ndarray, p: np.ndarray) -> float:
    return -1.0 if np.std(p) < 1e-9 else float(stats.kendalltau(y, p).statistic)


def measure(X: np.ndarray, y: np.ndarray, n: int, split: int) -> dict:
    order = np.random.default_rng(split).permutation(len(y))
    fit, held = order[:n], order[n:][:300]
    out = {"y": y[held], "held": {}, "cv": []}
    for kind in HELD_KINDS:
        out["held"][kind] = AccuracyPredictor(kind, seed=split).fit(X[fit], y[fit]).predict(X[held])
    for r in range(2):
        parts = folds_of(n, 4, split + 1000 * r)
        out["cv"].append({"y": y[fit], "parts": parts, **{k: out_of_fold(lambda a, b, k=k: AccuracyPredictor(k, seed=split).fit(a, b),
                                                                          X[fit], y[fit], parts) for k in CV_KINDS}})
    return out


def mix(predictions: dict, weights: dict[str, float]) -> np.ndarray:
    return sum(w * predictions[k] for k, w in weights.items())


#: a candidate: weights over the single kinds
CANDIDATES = {"linear": {"linear": 1}, "gp": {"gp": 1}, "gbt": {"gbt": 1}, "blend": {"gp": 0.5, "gbt": 0.5},
              "blend-1/3": {"gp": 2 / 3, "gbt": 1 / 3}, "blend-0.4": {"gp": 0.6, "gbt": 0.4}, "blend-0.6": {"gp": 0.4, "gbt": 0.6}}


def cv_tau(cell: dict, candidate: str) -> tuple[float, np.ndarray]:
    """Pooled out-of-fold τ averaged over the two assignments, and the per-fold τ."""
    pooled, folds = [], []
    for run in cell["cv"]:
        p = mix(run, CANDIDATES[candidate])
        pooled.append(tau(run["y"], p))
        folds += [tau(run["y"][h], p[h]) for h in run["parts"]]
    return float(np.mean(pooled)), np.array(folds)


def best_of(*candidates: str) -> Callable[[dict], str]:
    return lambda cell: max(candidates, key=lambda c: cv_tau(cell, c)[0])  # ties to the first


def margin(d: float) -> Callable[[dict], str]:
    return lambda cell: "blend" if cv_tau(cell, "blend")[0] > cv_tau(cell, "gp")[0] + d else "gp"


def paired(candidates: tuple[str, ...], preferred: str, m: float = 1.0) -> Callable[[dict], str]:
    """The preferred candidate unless another beats it by more than m standard errors of the paired fold differences."""
    def rule(cell: dict) -> str:
        scores = {c: cv_tau(cell, c) for c in candidates}
        best = max(candidates, key=lambda c: scores[c][0])
        diff = scores[best][1] - scores[preferred][1]
        error = diff.std(ddof=1) / np.sqrt(len(diff) / 2) if best != preferred else 0.0
        return best if scores[best][0] - scores[preferred][0] > m * error else preferred
    return rule


RULES = {
    "best of gp, blend (the default)": best_of("gp", "blend"),
    "best of gp, gbt, blend": best_of("gp", "gbt", "blend"),
    "best of linear, gp, gbt, blend": best_of("linear", "gp", "gbt", "blend"),
    "best of linear, gp, gbt": best_of("linear", "gp", "gbt"),
    "paired 1 SE, gp preferred, of gp, gbt, blend": paired(("gp", "gbt", "blend"), "gp"),
    "paired 0.5 SE, gp preferred, of gp, gbt, blend": paired(("gp", "gbt", "blend"), "gp", 0.5),
    "paired 1 SE, gp preferred, of gp, blend": paired(("gp", "blend"), "gp"),
    "gp unless blend ahead by 0.01": margin(0.01),
    "gp unless blend ahead by 0.02": margin(0.02),
    "best of gp, blend-0.4": best_of("gp", "blend-0.4"),
    "best of gp, blend-0.6": best_of("gp", "blend-0.6"),
    "best of gp, blend-1/3, blend": best_of("gp", "blend-1/3", "blend"),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=None)
    parser.add_argument("--sizes", nargs="+", type=int, default=[25, 50, 100])
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--cache", default="runs/auto_rules.pkl")
    args = parser.parse_args(argv)
    cache_path = Path(args.cache)
    cache = pickle.loads(cache_path.read_bytes()) if cache_path.exists() else {}
    data = sets()
    names = args.sets or list(data)
    for name in names:
        X, y = data[name]
        for n in args.sizes:
            for split in range(args.splits):
                if (name, n, split) not in cache:
                    cache[(name, n, split)] = measure(X, y, n, split)
                    cache_path.parent.mkdir(parents=True, exist_ok=True)
                    cache_path.write_bytes(pickle.dumps(cache))
        print(f"{name}: cached", flush=True)
    rows, summary = [], {r: [] for r in RULES}
    for name in names:
        for n in args.sizes:
            cells = [cache[(name, n, s)] for s in range(args.splits)]
            best = max(statistics.fmean(tau(c["y"], c["held"][k]) for c in cells) for k in HELD_KINDS)
            gaps = {}
            for rule, pick in RULES.items():
                held = [tau(c["y"], mix(c["held"], CANDIDATES[pick(c)])) for c in cells]
                gaps[rule] = statistics.fmean(held) - best
                summary[rule].append(gaps[rule])
            rows.append(f"| {name} | {n} | {best:.3f} | " + " | ".join(f"{g:+.3f}" for g in gaps.values()) + " |")
    lines = [f"Command: `python benchmarks/auto_rules.py{' --sets ' + ' '.join(names) if args.sets else ''} --sizes {' '.join(map(str, args.sizes))} --splits {args.splits}`",
             "", "Each rule's held-out τ minus the best of ridge, GP, trees and ensemble, mean over splits.", "",
             "| rule | misses (< -0.02) | worst | mean |", "|---|---:|---:|---:|"]
    lines += [f"| {r} | {sum(g < -0.02 for g in v)} / {len(v)} | {min(v):+.3f} | {statistics.fmean(v):+.3f} |" for r, v in summary.items()]
    lines += ["", "| set | n | best single | " + " | ".join(RULES) + " |", "|---|---:|---:|" + "---:|" * len(RULES), *rows]
    out = RESULTS / "auto_rules.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:6 + len(RULES)]))


if __name__ == "__main__":
    main()
