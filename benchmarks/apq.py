"""APQ (issue 6) on MNIST-1D: the elastic supernet, predictor transfer, and the joint search against others.

    python benchmarks/apq.py --threads 2                  # sections supernet and predictor

Section ``supernet``: an :class:`autocompress.elastic.ElasticCNN1d` (channels 32/64/128,
depth 1-3, width 0.5/0.75/1, kernel 3/5/7 per stage) trained once with the sandwich rule
(largest + smallest + ``--sandwich`` random sub-networks per step, in-place distillation) for
``--epochs``; then the largest, the smallest and ``--random`` random sub-networks are extracted
(BatchNorm statistics re-estimated) and their test accuracy compared with the same
architectures trained alone from scratch for the same number of epochs (Adam, cosine decay,
same seed). Parameters and MACs per sub-network are counted on the extracted model.

Section ``predictor``: full-precision labels of random sub-networks (cheap: extract, BN
re-estimation, validation accuracy) train a predictor; quantized labels (each conv's weights and
inputs fake-quantized at per-stage bits, a short quantization-aware fine-tune) are few. On n of
them: predictors from scratch (MLP, ensemble, GP), APQ's transfer (the full-precision MLP
fine-tuned, ``AccuracyPredictor.fit(..., warm_start=...)``) and ours
(:class:`~autocompress.predict.ResidualTransfer` on a full-precision GP); Kendall τ on held-out
labels, and the paper's check (transfer with ⌈n/4⌉ labels against the best from-scratch τ with
n, with a 90 % paired bootstrap interval of the margin over the held-out labels). ``--fp-extra``
and ``--q-extra`` add cheap labels / quantized pool labels from their own random streams (the
held-out labels stay), e.g. ``--fp-extra 1700 --q-extra 250 --sizes 10 25 38 40 50 100 150 200``
for the issue's 200-label point with five distinct draws at every n. The trained supernet and
the labels are kept under ``--runs`` (a second run re-uses them).

Section ``search`` (not run by default; ~15 min on 2 cores with the supernet kept in ``--runs``)::

    python benchmarks/apq.py --threads 2 --sections search --out benchmarks/results/apq_search

APQ's joint search (strategy ``apq``), the staged pipeline (``apq`` with ``pipeline="staged"``:
architecture, then bits), SeerNet and GeneCAI (per-layer prune / rank / bits of the largest
sub-network) each search (accuracy, BitOps) for ``--search-budget`` real evaluations; their best
accuracy at each BitOps target is compared among the candidates that finished within the same
wall-clock (``--wall-seconds``, default the fastest total among the arms that spent their whole
budget). ``--bits-per block`` gives the APQ arms one bit pair per block instead of per stage.
Studies are kept in ``--runs``/search.db.

Writes benchmarks/results/apq.{json,md} (``--out``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from autocompress.cost import count_cost
from autocompress.elastic import ElasticCNN1d, subnet_metric, train_supernet
from autocompress.finetune import evaluate_metric, train
from autocompress.zoo import load_task

RESULTS = Path(__file__).parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=float, default=10.0)
    parser.add_argument("--sandwich", type=int, default=2)
    parser.add_argument("--random", type=int, default=2, help="random sub-networks compared besides the two ends")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sections", nargs="+", default=["supernet", "predictor"],
                        choices=["supernet", "predictor", "search"])
    parser.add_argument("--fp-labels", type=int, default=300, help="full-precision sub-network labels (cheap)")
    parser.add_argument("--fp-extra", type=int, default=0,
                        help="more full-precision labels for the predictor section, drawn apart (the quantized labels stay)")
    parser.add_argument("--q-pool", type=int, default=150, help="quantized labels the predictors may use")
    parser.add_argument("--q-extra", type=int, default=0,
                        help="more quantized labels for the pool, drawn apart (the held-out ones stay)")
    parser.add_argument("--q-test", type=int, default=100, help="held-out quantized labels")
    parser.add_argument("--qat-steps", type=int, default=20, help="quantization-aware fine-tune steps per quantized label")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 25, 38, 40, 50, 100, 150])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--arms", nargs="+", default=list(SEARCH_ARMS), choices=SEARCH_ARMS, help="section search")
    parser.add_argument("--search-budget", type=int, default=40, help="real evaluations per arm (section search)")
    parser.add_argument("--transfer", default="residual", choices=["residual", "warm", "none"],
                        help="the APQ arms' predictor transfer (section search)")
    parser.add_argument("--targets", type=float, nargs="+", default=[0.03, 0.01, 0.005], help="BitOps ratios")
    parser.add_argument("--bits-per", default="stage", choices=["stage", "block"],
                        help="the APQ arms' bit pairs: one per stage or one per block (section search)")
    parser.add_argument("--wall-seconds", type=float, default=None,
                        help="compare the arms' candidates finished within this time "
                        "(default: the fastest total of the arms that spent their whole budget)")
    parser.add_argument("--runs", type=Path, default=Path("runs/apq"), help="trained supernet and labels are kept here")
    parser.add_argument("--out", type=Path, default=RESULTS / "apq")
    return parser.parse_args(argv)


def supernet_for(args: argparse.Namespace, task) -> tuple[ElasticCNN1d, dict]:  # noqa: ANN001
    """The trained supernet of these settings: from ``--runs`` when there, else trained and kept there."""
    path = args.runs / f"supernet-seed{args.seed}-e{args.epochs:g}-s{args.sandwich}.pt"
    torch.manual_seed(args.seed)
    supernet = ElasticCNN1d()
    if path.exists():
        saved = torch.load(path, weights_only=True)
        supernet.load_state_dict(saved["state"])
        return supernet.eval(), {k: float(v) for k, v in saved["stats"].items()} | {"cached": 1.0}
    stats = train_supernet(supernet, task, epochs=args.epochs, sandwich=args.sandwich, seed=args.seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state": supernet.state_dict(), "stats": stats}, path)
    return supernet, stats


def supernet_section(supernet: ElasticCNN1d, task, args: argparse.Namespace) -> list[dict]:  # noqa: ANN001
    rng = np.random.default_rng(args.seed)
    configs = {"largest": supernet.largest(), "smallest": supernet.smallest()}
    configs.update({f"random {i + 1}": supernet.random(rng) for i in range(args.random)})
    rows = []
    for label, config in configs.items():
        inherited, model = subnet_metric(supernet, config, task, "test", seed=args.seed)
        torch.manual_seed(args.seed)
        standalone = ElasticCNN1d().extract(config)
        for module in standalone.modules():  # fresh initialization of the same architecture
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        train_stats = train(standalone, task, epochs=args.epochs, lr=3e-3, seed=args.seed)
        cost = count_cost(model, task.example_input(1))
        rows.append({"subnet": label, "config": [vars(s) for s in config.stages], "params": cost.params,
                     "macs": cost.macs, "inherited": inherited, "alone": evaluate_metric(standalone, task, "test"),
                     "alone_seconds": train_stats["seconds"]})
        print(f"{label}: inherited {inherited:.2f}, trained alone {rows[-1]['alone']:.2f}", flush=True)
    return rows


# ------------------------------------------------------------------ predictor transfer
BITS = (4, 5, 6, 8)


def features(config, bits: tuple[int, ...]) -> np.ndarray:  # noqa: ANN001
    """Architecture (depth, width, kernel per stage) + quantization step 2^-bits per stage (0 = full precision)."""
    return np.concatenate([config.to_vector(), [0.0 if b >= 32 else 2.0 ** -b for b in bits]])


def quantized_metric(supernet: ElasticCNN1d, config, bits: tuple[int, ...], task, args, seed: int) -> float:  # noqa: ANN001
    """Extract, re-estimate BN, fake-quantize each stage's convs at its bits (weights and inputs), calibrate,
    fine-tune ``--qat-steps`` steps (quantization-aware), validation metric."""
    from autocompress.apply import apply_policy
    from autocompress.elastic import QuantSubnet
    from autocompress.finetune import recalibrate_batchnorm
    from autocompress.transforms.quantize import calibrate_activations

    model = supernet.extract(config)
    recalibrate_batchnorm(model, task, batches=20, seed=seed)
    policy = QuantSubnet(config, tuple((b, b) for b in bits)).to_policy(supernet)
    model = apply_policy(model, policy, task.example_input(1))
    calibrate_activations(model, [x for x, _ in zip(task.split("train")[0].split(256), range(4), strict=False)])
    if args.qat_steps:
        train(model, task, steps=args.qat_steps, lr=1e-3, seed=seed)
    return evaluate_metric(model, task, "val")


def fp_labels(supernet: ElasticCNN1d, task, count: int, rng: np.random.Generator, seed: int) -> tuple[list, list]:  # noqa: ANN001
    """``count`` random sub-networks: features at full precision and validation metric (inherited weights, BN re-estimated)."""
    X, y = [], []
    for _ in range(count):
        config = supernet.random(rng)
        X.append(features(config, (32,) * len(config.stages)))
        y.append(subnet_metric(supernet, config, task, "val", seed=seed)[0])
    return X, y


def q_labels(supernet: ElasticCNN1d, task, count: int, rng: np.random.Generator, args: argparse.Namespace) -> tuple[list, list]:  # noqa: ANN001
    """``count`` random (sub-network, bits per stage in :data:`BITS`) pairs: features and quantized metric."""
    X, y = [], []
    for _ in range(count):
        config = supernet.random(rng)
        bits = tuple(int(rng.choice(BITS)) for _ in config.stages)
        X.append(features(config, bits))
        y.append(quantized_metric(supernet, config, bits, task, args, args.seed))
    return X, y


def kept(path: Path, measure) -> dict[str, np.ndarray]:  # noqa: ANN001
    """The arrays kept at ``path`` (an .npz), or ``measure()``'s, kept there first."""
    if path.exists():
        return dict(np.load(path))
    out = measure()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out


def labels(supernet: ElasticCNN1d, task, args: argparse.Namespace) -> dict[str, np.ndarray]:  # noqa: ANN001
    path = args.runs / f"labels-seed{args.seed}-e{args.epochs:g}-fp{args.fp_labels}-q{args.q_pool + args.q_test}-qat{args.qat_steps}.npz"
    return kept(path, lambda: measure_labels(supernet, task, args))


def measure_labels(supernet: ElasticCNN1d, task, args: argparse.Namespace) -> dict[str, np.ndarray]:  # noqa: ANN001
    rng = np.random.default_rng([args.seed, 17])
    start = time.perf_counter()
    fp_X, fp_y = fp_labels(supernet, task, args.fp_labels, rng, args.seed)
    fp_seconds = time.perf_counter() - start
    print(f"{args.fp_labels} full-precision labels in {fp_seconds:.0f} s", flush=True)
    q_X, q_y = q_labels(supernet, task, args.q_pool + args.q_test, rng, args)
    q_seconds = time.perf_counter() - start - fp_seconds
    print(f"{args.q_pool + args.q_test} quantized labels in {q_seconds:.0f} s", flush=True)
    return {"fp_X": np.array(fp_X), "fp_y": np.array(fp_y), "q_X": np.array(q_X), "q_y": np.array(q_y),
            "seconds": np.array([fp_seconds, q_seconds])}


def extra_fp_labels(supernet: ElasticCNN1d, task, args: argparse.Namespace) -> dict[str, np.ndarray]:  # noqa: ANN001
    """``--fp-extra`` more full-precision labels, from their own random stream (the other labels stay as they are)."""
    return kept(args.runs / f"fp-extra-seed{args.seed}-e{args.epochs:g}-n{args.fp_extra}.npz",
                lambda: measure_extra_fp_labels(supernet, task, args))


def measure_extra_fp_labels(supernet: ElasticCNN1d, task, args: argparse.Namespace) -> dict[str, np.ndarray]:  # noqa: ANN001
    rng = np.random.default_rng([args.seed, 19])
    X, y, seconds = [], [], 0.0
    smaller = sorted((int(f.stem.rsplit("-n", 1)[1]), f) for f in args.runs.glob(f"fp-extra-seed{args.seed}-e{args.epochs:g}-n*.npz"))
    smaller = [(n, f) for n, f in smaller if n < args.fp_extra]
    if smaller:  # the same stream's first labels, kept by a smaller --fp-extra: measure only the rest
        n, f = smaller[-1]
        earlier = dict(np.load(f))
        X, y, seconds = list(earlier["fp_X"]), list(earlier["fp_y"]), float(earlier["seconds"])
        for _ in range(n):
            supernet.random(rng)  # the stream's position after those labels
    start = time.perf_counter()
    more_X, more_y = fp_labels(supernet, task, args.fp_extra - len(X), rng, args.seed)
    seconds += time.perf_counter() - start
    print(f"{len(more_X)} more full-precision labels in {time.perf_counter() - start:.0f} s", flush=True)
    return {"fp_X": np.array(X + more_X), "fp_y": np.array(y + more_y), "seconds": np.array(seconds)}


def extra_q_labels(supernet: ElasticCNN1d, task, args: argparse.Namespace) -> dict[str, np.ndarray]:  # noqa: ANN001
    """``--q-extra`` more quantized labels for the pool, from their own random stream (the held-out ones stay)."""
    return kept(args.runs / f"q-extra-seed{args.seed}-e{args.epochs:g}-n{args.q_extra}-qat{args.qat_steps}.npz",
                lambda: measure_extra_q_labels(supernet, task, args))


def measure_extra_q_labels(supernet: ElasticCNN1d, task, args: argparse.Namespace) -> dict[str, np.ndarray]:  # noqa: ANN001
    start = time.perf_counter()
    X, y = q_labels(supernet, task, args.q_extra, np.random.default_rng([args.seed, 29]), args)
    seconds = time.perf_counter() - start
    print(f"{args.q_extra} more quantized labels in {seconds:.0f} s", flush=True)
    return {"q_X": np.array(X), "q_y": np.array(y), "seconds": np.array(seconds)}


PREDICTOR_ARMS = ("scratch_mlp", "scratch_ensemble", "scratch_gp", "warm", "residual")
ARM_NAMES = {"scratch_mlp": "scratch MLP", "scratch_ensemble": "scratch ensemble", "scratch_gp": "scratch GP",
             "warm": "transfer: warm start (APQ)", "residual": "transfer: residual (ours)"}


def predictor_section(supernet: ElasticCNN1d, task, args: argparse.Namespace) -> dict:  # noqa: ANN001
    """Quantization-aware predictors on n of the ``--q-pool`` labels, Kendall τ / RMSE on the held-out ones:
    from scratch (MLP, ensemble, GP), APQ's warm start (the full-precision MLP fine-tuned) and the residual
    transfer (:class:`~autocompress.predict.ResidualTransfer` on a full-precision GP)."""
    from autocompress.predict import AccuracyPredictor, ResidualTransfer, ranking_metrics

    data = labels(supernet, task, args)
    if args.fp_extra:
        extra = extra_fp_labels(supernet, task, args)
        data["fp_X"], data["fp_y"] = np.concatenate([data["fp_X"], extra["fp_X"]]), np.concatenate([data["fp_y"], extra["fp_y"]])
        data["seconds"] = data["seconds"] + np.array([float(extra["seconds"]), 0.0])
    pool_X, pool_y = data["q_X"][: args.q_pool], data["q_y"][: args.q_pool]
    test_X, test_y = data["q_X"][args.q_pool:], data["q_y"][args.q_pool:]
    if args.q_extra:
        extra = extra_q_labels(supernet, task, args)
        pool_X, pool_y = np.concatenate([pool_X, extra["q_X"]]), np.concatenate([pool_y, extra["q_y"]])
        data["seconds"] = data["seconds"] + np.array([0.0, float(extra["seconds"])])
    if max(args.sizes) > len(pool_y):
        raise SystemExit(f"--sizes up to {max(args.sizes)} need that many quantized labels; the pool has {len(pool_y)} "
                         "(raise --q-extra)")
    sources = {kind: AccuracyPredictor(kind, seed=args.seed).fit(data["fp_X"], data["fp_y"]) for kind in ("mlp", "gp")}
    zero_shot = {kind: ranking_metrics(test_y, source.predict(test_X)) for kind, source in sources.items()}
    fits = {
        "scratch_mlp": lambda X, y, seed: AccuracyPredictor("mlp", seed=seed).fit(X, y),
        "scratch_ensemble": lambda X, y, seed: AccuracyPredictor("ensemble", seed=seed).fit(X, y),
        "scratch_gp": lambda X, y, seed: AccuracyPredictor("gp", seed=seed).fit(X, y),
        "warm": lambda X, y, seed: AccuracyPredictor("mlp", seed=seed).fit(X, y, warm_start=sources["mlp"]),
        "residual": lambda X, y, seed: ResidualTransfer(sources["gp"], seed=seed).fit(X, y),
    }
    rows = []
    for seed in args.seeds:
        order = np.random.default_rng([seed, 23]).permutation(len(pool_y))
        for n in args.sizes:
            picked = order[:n]
            for arm in PREDICTOR_ARMS:
                predicted = np.asarray(fits[arm](pool_X[picked], pool_y[picked], seed).predict(test_X), dtype=float)
                rows.append({"seed": seed, "n": n, "arm": arm, **ranking_metrics(test_y, predicted),
                             "predicted": predicted.tolist()})
        done = [r for r in rows if r["seed"] == seed and r["arm"] in ("scratch_gp", "residual")]
        print(f"seed {seed}: " + ", ".join(f"{r['arm']}@{r['n']} {r['kendall_tau']:.3f}" for r in done), flush=True)
    summary = {}
    for arm in PREDICTOR_ARMS:
        for n in args.sizes:
            cell = [r for r in rows if r["arm"] == arm and r["n"] == n]
            summary[f"{arm}@{n}"] = {k: (float(np.mean([c[k] for c in cell])), float(np.std([c[k] for c in cell])))
                                     for k in ("kendall_tau", "rmse")}
    return {"rows": rows, "summary": summary, "zero_shot": zero_shot,
            "quarter": quarter_check(summary, args.sizes, rows, test_y, args.seed),
            "seconds": data["seconds"].tolist(),
            "label_stats": {"fp_mean": float(data["fp_y"].mean()), "fp_std": float(data["fp_y"].std()),
                            "q_mean": float(data["q_y"].mean()), "q_std": float(data["q_y"].std())}}


def quarter_check(summary: dict, sizes: list[int], rows: list[dict], test_y: np.ndarray, seed: int) -> list[dict]:
    """The paper's goal: each transfer's τ with ⌈n/4⌉ labels against the best from-scratch τ with n.

    ``interval``: a 90 % paired bootstrap interval of the residual transfer's margin (its mean τ over
    the draws minus the from-scratch arm's), resampling the held-out labels (1000 resamples, the same
    ones for both arms): how much of a margin the 100 held-out labels can tell from zero."""
    out = []
    resamples = np.random.default_rng([seed, 31]).integers(0, len(test_y), (1000, len(test_y)))

    @functools.cache  # n = 38 and 40 both use the transfer with 10 labels
    def taus(arm: str, n: int) -> np.ndarray:  # (resamples,) mean τ over the draws
        preds = [np.asarray(r["predicted"]) for r in rows if r["arm"] == arm and r["n"] == n]
        return np.mean([[stats.kendalltau(test_y[i], p[i]).statistic for i in resamples] for p in preds], axis=0)

    for n in sizes:
        few = -(-n // 4)
        if few not in sizes:
            continue
        best = max((a for a in PREDICTOR_ARMS if a.startswith("scratch")), key=lambda a: summary[f"{a}@{n}"]["kendall_tau"][0])
        row = {"n": n, "few": few, "scratch_arm": best, "scratch_tau": summary[f"{best}@{n}"]["kendall_tau"][0]}
        for arm in ("warm", "residual"):
            row[arm] = summary[f"{arm}@{few}"]["kendall_tau"][0]
        margin = taus("residual", few) - taus(best, n)
        row["interval"] = [float(np.percentile(margin, 5)), float(np.percentile(margin, 95))]
        out.append(row)
    return out


# ------------------------------------------------------------------ joint search vs the others
SEARCH_ARMS = ("apq", "staged", "seernet", "genecai")


def arm_strategy(arm: str, args: argparse.Namespace):  # noqa: ANN201
    """The strategy of one arm; every arm works on BitOps at the same targets (ratios of the largest sub-network)."""
    from autocompress.search.strategies import make_strategy
    from autocompress.search.strategies.apq import APQStrategy

    targets = [f"bitops_ratio<={t:g}" for t in args.targets]
    if arm in ("apq", "staged"):
        final = 2
        return APQStrategy(targets=targets, fp_samples=args.fp_labels, final=final, pipeline="staged" if arm == "staged" else "joint",
                           q_samples=max(0, args.search_budget - final * len(targets)), transfer=args.transfer,
                           kind="mlp" if args.transfer == "warm" else "auto", bits_per=args.bits_per)
    if arm == "seernet":  # its schedule spends the whole budget: first labels + 2 rounds of 6 + one per target
        return make_strategy("seernet", targets=targets, cost="bitops", initial=seernet_initial(args),
                             rounds=SEERNET_ROUNDS, batch=SEERNET_BATCH)
    return make_strategy("genecai", cost="bitops", fields=["prune", "rank", "weight_bits", "act_bits"])


SEERNET_ROUNDS, SEERNET_BATCH = 2, 6  # SeerNet's selection rounds (its defaults), given explicitly to fill the budget


def seernet_initial(args: argparse.Namespace) -> int:
    """SeerNet's first labels when its selection rounds and one evaluation per target fill the budget."""
    return max(2, args.search_budget - SEERNET_ROUNDS * SEERNET_BATCH - len(args.targets))


def finished_within(study, seconds: float) -> list:  # noqa: ANN001
    """The completed records of ``study`` that finished within ``seconds`` of its start (its wall-clock so far)."""
    start = study.meta["started"]
    numbers = {t.number for t in study.optuna.get_trials(deepcopy=False)
               if t.datetime_complete is not None and t.datetime_complete.timestamp() - start <= seconds}
    return [r for r in study.completed() if r.number in numbers]


def search_section(supernet: ElasticCNN1d, task, args: argparse.Namespace) -> dict:  # noqa: ANN001
    """Each arm searches (accuracy, BitOps) of the largest sub-network for ``--search-budget`` evaluations
    (``--qat-steps`` quantization-aware steps each), timed from its start, APQ's cheap labels and evolution
    included; each arm's best validation accuracy at every target among the candidates finished within the
    same wall-clock. A finished arm (its study has ``seconds``) is read back, not run again."""
    from autocompress.search import Study, search

    _, reference = subnet_metric(supernet, supernet.largest(), task, seed=args.seed)
    storage = args.runs / "search.db"
    studies = {}
    for arm in args.arms:
        name = f"{arm}-seed{args.seed}-e{args.epochs:g}-b{args.search_budget}-qat{args.qat_steps}"
        if arm in ("apq", "staged") and args.transfer != "warm":  # "warm" (APQ's own) was the first studies' transfer
            name = f"{arm}-{args.transfer}-" + name.split("-", 1)[1]
        if arm in ("apq", "staged") and args.bits_per == "block":
            name = f"{arm}-block-" + name.split("-", 1)[1]
        if arm == "seernet":  # the first studies used SeerNet's default schedule (27 of the 40 evaluations)
            name = f"{arm}-initial{seernet_initial(args)}-" + name.split("-", 1)[1]
        study = Study.open(storage, name, objectives=["accuracy", "bitops"])
        if "seconds" not in study.meta:
            start = time.time()
            study.set_meta(started=start)
            search(reference, task, strategy=arm_strategy(arm, args), elastic=supernet if arm in ("apq", "staged") else None,
                   objectives=["accuracy", "bitops"], budget=args.search_budget, storage=storage, study_name=name,
                   seed=args.seed, finetune_epochs=0, evaluator={"finetune_steps": args.qat_steps}, progress=False)
            study.set_meta(seconds=time.time() - start)
        studies[arm] = study
        print(f"{arm}: {len(study.completed())} evaluations in {study.meta['seconds']:.0f} s", flush=True)
    spent = [s for s in studies.values() if len(s.completed()) >= args.search_budget] or list(studies.values())
    horizon = args.wall_seconds or min(s.meta["seconds"] for s in spent)  # an arm that stopped early does not set it
    rows = []
    for arm, study in studies.items():
        within = finished_within(study, horizon)
        best = {f"{t:g}": max((r.values["metric"] for r in within if r.values["bitops_ratio"] <= t), default=None)
                for t in args.targets}
        rows.append({"arm": arm, "evaluations": len(study.completed()), "seconds": study.meta["seconds"],
                     "within": len(within), "best": best})
    return {"horizon": horizon, "rows": rows, "metric_original": float(next(iter(studies.values())).meta["original"]["metric"])}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    task = load_task("mnist1d", seed=args.seed)
    start = time.perf_counter()
    supernet, stats = supernet_for(args, task)
    print(f"supernet: {stats}", flush=True)
    result = {"command": "python benchmarks/apq.py " + shlex.join(sys.argv[1:] if argv is None else argv),
              "date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
              f"{args.threads} torch threads, load average {os.getloadavg()[0]:.1f}", "torch": torch.__version__,
              "settings": {k: str(v) for k, v in vars(args).items()}, "supernet": stats}
    if "supernet" in args.sections:
        result["rows"] = supernet_section(supernet, task, args)
    if "predictor" in args.sections:
        result["predictor"] = predictor_section(supernet, task, args)
    if "search" in args.sections:
        result["search"] = search_section(supernet, task, args)
    result["seconds"] = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    args.out.with_suffix(".md").write_text(markdown(result, args))
    print(markdown(result, args))


def markdown(result: dict, args: argparse.Namespace) -> str:
    stats = result["supernet"]
    lines = ["# APQ on MNIST-1D: elastic supernet and predictor transfer", "",
             f"Command `{result['command']}`; {result['date']}; {result['machine']}; torch {result['torch']}; seed "
             f"{args.seed}; {result['seconds']:.0f} s.", "",
             f"Supernet (channels 32/64/128, depth 1–3, width 0.5/0.75/1, kernel 3/5/7 per stage) trained once for "
             f"{args.epochs:g} epochs with the sandwich rule (largest + smallest + {args.sandwich} random per step, "
             f"in-place distillation): {stats['seconds']:.0f} s{' (kept in ' + str(args.runs) + ')' if stats.get('cached') else ''}."]
    if "rows" in result:
        lines += ["", f"Sub-networks extracted with their inherited weights (BatchNorm re-estimated on 20 training batches) "
                  f"vs the same architecture trained alone for {args.epochs:g} epochs (Adam 3e-3, cosine). Test accuracy, %:", "",
                  "| sub-network | (depth, width, kernel) per stage | params | MACs | inherited from the supernet | trained alone |",
                  "|---|---|---:|---:|---:|---:|"]
        for r in result["rows"]:
            arch = " · ".join(f"({s['depth']}, {s['width']:g}, {s['kernel']})" for s in r["config"])
            lines.append(f"| {r['subnet']} | {arch} | {r['params']:,} | {r['macs']:,} | {r['inherited']:.2f} | {r['alone']:.2f} |")
    if "predictor" in result:
        p = result["predictor"]
        ls = p["label_stats"]
        lines += ["", "## Predictor transfer", "",
                  f"Labels: {args.fp_labels + args.fp_extra} random sub-networks at full precision (validation accuracy of the extracted model, "
                  f"mean {ls['fp_mean']:.1f}, std {ls['fp_std']:.1f}; {p['seconds'][0]:.0f} s) and "
                  f"{args.q_pool + args.q_extra + args.q_test} random (sub-network, bits per stage in {list(BITS)}) pairs, weights and "
                  f"inputs of every conv fake-quantized, {args.qat_steps} quantization-aware fine-tune steps (mean "
                  f"{ls['q_mean']:.1f}, std {ls['q_std']:.1f}; {p['seconds'][1]:.0f} s). Features: (depth, width, kernel) "
                  "per stage + 2^-bits per stage (0 at full precision). Kendall τ on "
                  f"{args.q_test} held-out quantized labels, mean ± std over seeds {args.seeds} (which n labels of the "
                  f"{args.q_pool + args.q_extra} are used). Full-precision predictors (on all {args.fp_labels + args.fp_extra} cheap labels) alone, zero-shot: "
                  f"MLP τ {p['zero_shot']['mlp']['kendall_tau']:.3f}, GP τ {p['zero_shot']['gp']['kendall_tau']:.3f}. "
                  "Arms: from scratch on the n quantized labels (SeerNet's MLP, an ensemble of 5, a GP); APQ's warm start "
                  "(the full-precision MLP's networks trained further on the n labels); the residual transfer "
                  "(`ResidualTransfer`: the full-precision GP kept, a GP fitted on the n residuals with the bits and the "
                  "full-precision prediction as inputs).", "",
                  "| quantized labels | " + " | ".join(f"{ARM_NAMES[a]} τ" for a in PREDICTOR_ARMS) + " | residual RMSE |",
                  "|---:|" + "---:|" * (len(PREDICTOR_ARMS) + 1)]
        for n in args.sizes:
            cells = [p["summary"][f"{a}@{n}"]["kendall_tau"] for a in PREDICTOR_ARMS]
            lines.append(f"| {n} | " + " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in cells)
                         + f" | {p['summary'][f'residual@{n}']['rmse'][0]:.2f} |")
        lines += ["", "The paper's goal, transfer with a quarter of the quantized labels at the from-scratch τ (the best "
                  "from-scratch kind at n):", "",
                  "| n | best from scratch at n | transfer at ⌈n/4⌉ | warm start | residual | residual's margin, "
                  "90 % bootstrap interval |", "|---:|---|---:|---:|---:|---|"]
        for q in p["quarter"]:
            warm, residual = (f"**{q[a]:.3f}**" if q[a] >= q["scratch_tau"] else f"{q[a]:.3f}" for a in ("warm", "residual"))
            interval = "[{:+.3f}, {:+.3f}]".format(*q["interval"]) if "interval" in q else "–"
            lines.append(f"| {q['n']} | {ARM_NAMES[q['scratch_arm']]} {q['scratch_tau']:.3f} | {q['few']} | {warm} | "
                         f"{residual} | {interval} |")
        lines += ["", "Margin: the residual transfer's τ minus the from-scratch one; the interval resamples the "
                  f"{args.q_test} held-out labels (paired, 1000 resamples)."]
    if "search" in result:
        lines += search_markdown(result["search"], args)
    return "\n".join(lines) + "\n"


def search_markdown(section: dict, args: argparse.Namespace) -> list[str]:
    targets = [f"{t:g}" for t in args.targets]
    lines = ["", "## Joint search vs staged vs SeerNet / GeneCAI", "",
             f"Objectives (accuracy, BitOps) of the largest sub-network (validation accuracy "
             f"{section['metric_original']:.2f}); {args.search_budget} real evaluations per arm, each with "
             f"{args.qat_steps} quantization-aware fine-tune steps. apq: the joint search ({args.fp_labels} cheap "
             f"full-precision labels, the rest of the budget quantized labels, predictor transfer `{args.transfer}`, "
             f"bits per {args.bits_per}, 2 "
             "finalists per target); staged: the same "
             "predictors, architecture first (at the highest bits), then bits; seernet / genecai: per-layer prune, "
             f"rank and bits of the largest sub-network (seernet: {seernet_initial(args)} first labels, 2 rounds of 6, one "
             "evaluation per target). Best validation accuracy among the candidates finished within "
             f"{section['horizon']:.0f} s of each arm's start (equal wall-clock), per BitOps ratio target:", "",
             "| arm | evaluations | seconds | within the wall-clock | " + " | ".join(f"BitOps ≤ {t}" for t in targets) + " |",
             "|---|---:|---:|---:|" + "---:|" * len(targets)]
    for row in section["rows"]:
        cells = [("–" if row["best"][t] is None else f"{row['best'][t]:.2f}") for t in targets]
        lines.append(f"| {row['arm']} | {row['evaluations']} | {row['seconds']:.0f} | {row['within']} | " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    main()
