"""``apq``: joint search of architecture and mixed precision on an elastic supernet.

APQ (Wang, Wang, Cai, Lin, Liu, Han, "APQ: Joint Search for Network Architecture, Pruning and
Quantization Policy", CVPR 2020; code mit-han-lab/apq). The search needs an elastic supernet:
``search(reference, task, elastic=supernet, strategy="apq")`` (docs/elastic.md). A candidate
is a :class:`~autocompress.elastic.QuantSubnet` — (depth, width, kernel) per stage, width being
APQ's channel pruning, and (weight, activation) bits per stage (per block with
``bits_per="block"``) — stored in the study as a Policy with ``arch`` set, so its records, costs
and Pareto front are those of every strategy.

1. **Full-precision labels** (cheap, not evaluations): ``fp_samples`` random architectures,
   each measured with its inherited weights after BatchNorm re-estimation
   (:meth:`~autocompress.elastic.ElasticSpace.fp_metric`), progress beside the search's bar;
   a predictor (:class:`~autocompress.predict.AccuracyPredictor`, ``kind``) is fitted on them.
   They are kept in the study (its meta, keyed by the supernet's weights and how labels are
   measured) as they come, so an interrupted search resumes without measuring them again.
2. **Quantized labels** (real evaluations, ``phase="label"``): ``q_samples`` random candidates
   within at least one budget, quantized, calibrated and fine-tuned quantization-aware by the
   search's evaluator.
3. **Predictor transfer** (``transfer``): ``"residual"`` (default) keeps the full-precision
   predictor and fits a correction on the quantized labels' residuals, with the bits and the
   full-precision prediction as inputs (:class:`~autocompress.predict.ResidualTransfer`; on
   MNIST-1D it ranks at τ 0.82 with 25 quantized labels, APQ's own transfer at 0.55,
   ``benchmarks/results/apq.md``); ``"warm"`` is APQ's: the full-precision MLP fine-tuned on
   them (``AccuracyPredictor.fit(..., warm_start=...)``, ``kind`` "mlp" or "ensemble");
   ``"none"`` fits one from scratch. Features: :meth:`~autocompress.elastic.QuantSubnet.features`.
4. **Evolution** per budget (:func:`~autocompress.search.evolution.evolve`, the paper's
   population, parent ratio, mutation ratio and mutate probability; iterations scaled down from
   ~500 for a CPU), every individual within the budget by exact count (children that violate it
   are redrawn), crossover children kept (the public code drops them).
5. **Final candidates** (``phase="final"``, ``target=...``, ``pipeline=...``): the ``final`` best distinct
   individuals of each budget, fine-tuned quantization-aware and measured by the evaluator (its
   fine-tune budget is the search's; ``confirm(..., elastic=supernet)`` fine-tunes the best longer).

Budgets (``targets``, default the search's cost constraints, else ``DEFAULT_RATIOS`` of
``cost``): exact costs (``bitops``, ``flops``, ``macs``, ``params``, ``bytes``; ratios of the
search's model) from :meth:`~autocompress.elastic.ElasticSpace.cost`, or latency (``"latency<=2"``
ms, ``"latency_ratio<=0.5"`` of the search's model) from the search's lookup table (that of
``ctx.latency_model``: ``latency={"estimate": True}``; :meth:`~autocompress.elastic.ElasticSpace.latency_ms`). On
``ort-cpu`` it times layers at 8 bits or fewer in int8, as the int8 file runs them, so a latency
budget bounds the architecture and which stages are quantized, but cannot tell 4, 6 and 8 bits
apart (ONNX Runtime runs them all as int8); add ``32`` to ``weight_bits`` / ``act_bits`` to let
stages stay in float.
Pruning genes other than the width (per-layer prune ratios, low rank) are not searched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from autocompress.elastic import ElasticSpace, QuantSubnet
from autocompress.elastic.encoding import ARCH_GENES, genes_per_stage
from autocompress.policy import check_bits
from autocompress.predict import KINDS, AccuracyPredictor, ResidualTransfer
from autocompress.search.evolution import Evolution, check_settings, evolve
from autocompress.search.ladders import LATENCY_KEYS
from autocompress.search.objectives import COST_KEYS, Record
from autocompress.search.strategies.base import SearchContext, Strategy
from autocompress.search.strategies.greedy import cost_bounds, parse_target
from autocompress.threads import single_threaded

DEFAULT_RATIOS = (0.03, 0.01, 0.005)
WARM_KINDS = ("mlp", "ensemble")  # the ones a warm start can transfer
KEEP_EVERY = 10  # cheap labels measured between two saves into the study
TRANSFERS = ("residual", "warm", "none")
PIPELINES = ("joint", "staged")
BITS_PER = ("stage", "block")
Predictor = AccuracyPredictor | ResidualTransfer


@dataclass(frozen=True)
class Budget:
    """One budget: ``cost(candidate) <= bound`` (absolute units of ``key``), labelled as given."""

    key: str
    bound: float
    label: str
    cost: Callable[[QuantSubnet], float]

    def allows(self, candidate: QuantSubnet) -> bool:
        return self.cost(candidate) <= self.bound


@dataclass(kw_only=True)
class APQStrategy(Strategy):
    """APQ (module docstring). Defaults scaled for a CPU: the paper's population 100 and ~500
    iterations, its parent ratio 0.25, mutation ratio 0.5 and mutate probability 0.1.
    ``kind`` / ``epochs``: the full-precision predictor (an :class:`AccuracyPredictor` kind or
    "auto"; MLPs trained for ``epochs``); ``transfer``: how it becomes the quantization-aware one.
    ``pipeline="staged"``: the baseline that chooses the architecture, then the bits (:meth:`_evolve`).
    ``bits_per``: ``"stage"`` (one bit pair per stage) or ``"block"`` (one per block, up to the deepest
    stage's depth: :class:`~autocompress.elastic.QuantSubnet` ``blocks``)."""

    name: ClassVar[str] = "apq"
    targets: Sequence[str | float] | None = None
    cost: str = "bitops"
    weight_bits: Sequence[int] = (4, 6, 8)
    act_bits: Sequence[int] = (4, 6, 8)
    fp_samples: int = 100
    q_samples: int = 16
    transfer: str = "residual"
    kind: str = "auto"
    epochs: int = 600
    population: int = 50
    parent_ratio: float = 0.25
    mutation_ratio: float = 0.5
    mutate_prob: float = 0.1
    iterations: int = 40
    final: int = 2
    max_tries: int = 100
    pipeline: str = "joint"
    bits_per: str = "stage"

    def __post_init__(self) -> None:
        if self.cost not in COST_KEYS:
            raise ValueError(f"apq: cost must be one of {list(COST_KEYS)}, got {self.cost!r}")
        if self.transfer not in TRANSFERS:
            raise ValueError(f"apq: transfer must be one of {list(TRANSFERS)}, got {self.transfer!r}")
        kinds = WARM_KINDS if self.transfer == "warm" else ("auto", *KINDS)
        if self.kind not in kinds:
            raise ValueError(f"apq: with transfer={self.transfer!r}, kind must be one of {list(kinds)}, got {self.kind!r}")
        if self.pipeline not in PIPELINES:
            raise ValueError(f"apq: pipeline must be one of {list(PIPELINES)}, got {self.pipeline!r}")
        if self.bits_per not in BITS_PER:
            raise ValueError(f"apq: bits_per must be one of {list(BITS_PER)}, got {self.bits_per!r}")
        if self.fp_samples < 2 or self.q_samples < 0 or self.final < 1:
            raise ValueError(f"apq: need fp_samples >= 2, q_samples >= 0, final >= 1; "
                             f"got {self.fp_samples}, {self.q_samples}, {self.final}")
        self.weight_bits = tuple(check_bits(b, "weight_bits") for b in self.weight_bits)
        self.act_bits = tuple(check_bits(b, "act_bits") for b in self.act_bits)
        if isinstance(self.targets, (str, int, float)):
            self.targets = [self.targets]
        self._parsed = None if self.targets is None else [parse_target(t, self.cost) for t in self.targets]
        check_settings(**self._evolution())

    def _evolution(self) -> dict[str, Any]:
        return {"population": self.population, "parent_ratio": self.parent_ratio, "mutation_ratio": self.mutation_ratio,
                "mutate_prob": self.mutate_prob, "iterations": self.iterations, "max_tries": self.max_tries}

    # ------------------------------------------------------------------ run
    def run(self, ctx: SearchContext) -> None:
        elastic: ElasticSpace | None = getattr(ctx, "elastic", None)
        if elastic is None:
            raise ValueError("apq: the search has no elastic supernet; run search(reference, task, elastic=supernet, "
                             "strategy='apq') (docs/elastic.md)")
        budgets = self.budgets(ctx, elastic)
        choices, blocks = self.choices(elastic), self.blocks(elastic)
        with single_threaded():  # small sub-networks: one thread is faster, and much faster on a busy machine
            predictor = self._fp_predictor(ctx, elastic, blocks)
        quantized = self._quantized_predictor(ctx, elastic, predictor, choices, budgets, blocks)
        if quantized is None:
            return
        for index, budget in enumerate(budgets):
            if ctx.remaining() <= 0:
                return
            with single_threaded():
                result = self._evolve(budget, choices, predictor, quantized, np.random.default_rng([ctx.seed, 43, index]),
                                      blocks)
            if not result.population:
                ctx.log(f"apq: no candidate within {budget.label} in {self.max_tries * self.population} random draws; skipped")
                continue
            chosen = result.best(self.final, key=lambda v: tuple(QuantSubnet.from_vector(v, blocks).to_vector()))
            kept = sum(h.get("crossover", 0) for h in result.history)
            ctx.log(f"apq: {budget.label}: predicted {', '.join(f'{c.fitness:.2f}' for c in chosen)}; "
                    f"{kept} crossover children joined the population over {self.iterations} generations")
            policies = [elastic.policy(QuantSubnet.from_vector(c.vector, blocks)) for c in chosen]
            records = ctx.evaluate_many(policies, phase="final", target=budget.label, pipeline=self.pipeline)
            if any(r.state == "skipped" for r in records):
                return

    def _evolve(self, budget: Budget, choices: list[tuple[float, ...]], fp: AccuracyPredictor,
                quantized: Predictor, rng: np.random.Generator, blocks: int) -> Evolution:
        """``joint``: one evolution over architecture and bits on the quantization-aware predictor.
        ``staged``: the architecture first, on the full-precision predictor with every stage at the
        highest bits, then the bits of that architecture on the quantization-aware one (both within the budget)."""

        def run(genes: list[tuple[float, ...]], predictor: Predictor) -> Evolution:
            return evolve(genes, lambda rows: predictor.predict(_features(rows, blocks)),
                          lambda v: budget.allows(QuantSubnet.from_vector(v, blocks)), rng, **self._evolution())

        if self.pipeline == "joint":
            return run(choices, quantized)
        width = genes_per_stage(blocks)
        architecture = run([c if i % width < ARCH_GENES else (max(c),) for i, c in enumerate(choices)], fp)
        if not architecture.population:
            return architecture
        chosen = architecture.population[0].vector
        return run([(chosen[i],) if i % width < ARCH_GENES else c for i, c in enumerate(choices)], quantized)

    # ------------------------------------------------------------------ parts
    def choices(self, elastic: ElasticSpace) -> list[tuple[float, ...]]:
        """Legal values of each gene of :meth:`QuantSubnet.to_vector`, stage by stage."""
        bits = [tuple(map(float, self.weight_bits)), tuple(map(float, self.act_bits))] * self.blocks(elastic)
        out: list[tuple[float, ...]] = []
        for stage in elastic.supernet.choices():
            out += [tuple(map(float, stage[f])) for f in ("depth", "width", "kernel")] + bits
        return out

    def blocks(self, elastic: ElasticSpace) -> int:
        """Bit pairs per stage: 1, or with ``bits_per="block"`` the deepest stage's depth."""
        if self.bits_per == "stage":
            return 1
        largest = elastic.supernet.largest()
        layers = [len(names) for names in elastic.supernet.stage_layers(largest)]
        if layers != [stage.depth for stage in largest.stages]:
            raise ValueError(f"apq: bits_per='block' needs one quantized layer per block in stage_layers(); the largest "
                             f"sub-network has {layers} layers for depths {[s.depth for s in largest.stages]}; "
                             "use bits_per='stage'")
        return int(max(max(stage["depth"]) for stage in elastic.supernet.choices()))

    def budgets(self, ctx: SearchContext, elastic: ElasticSpace) -> list[Budget]:
        """The budgets searched, in the order given, each with its exact cost function."""
        parsed = self._parsed or cost_bounds(ctx.constraints) or [(self.cost, r, True) for r in DEFAULT_RATIOS]
        out = []
        for key, bound, is_ratio in parsed:
            if key in LATENCY_KEYS:
                latency = ctx.latency_model
                if latency is None:
                    raise ValueError("apq: a latency budget needs the lookup tables: search(..., latency={'estimate': True})")
                cost = _latency_cost(elastic, latency.table)
                base = elastic.reference_latency_ms(latency.table)
            else:
                cost = _exact_cost(elastic, key)
                base = float(ctx.original.values[key])
            label = f"{key}_ratio<={bound:g}" if is_ratio else f"{key}<={bound:g}"
            out.append(Budget(key, bound * base if is_ratio else bound, label, cost))
        return out

    def _fp_predictor(self, ctx: SearchContext, elastic: ElasticSpace, blocks: int) -> AccuracyPredictor:
        """The full-precision predictor, on ``fp_samples`` cheap labels. The labels are kept in the study
        as they are measured (every ``KEEP_EVERY``), so a resumed search measures only those it lacks and
        fits the same predictor: it replays the same candidates."""
        rng = np.random.default_rng([ctx.seed, 41])
        configs = [elastic.supernet.random(rng) for _ in range(self.fp_samples)]
        arches = [",".join(f"{v:g}" for v in c.to_vector()) for c in configs]
        key = f"apq-fp-labels-{elastic.fingerprint()}"
        labels: dict[str, float] = dict(ctx.kept(key) or {})
        found = sum(arch in labels for arch in arches)
        for index, (config, arch) in enumerate(zip(configs, arches, strict=True)):
            if arch not in labels:
                ctx.status(f"apq: full-precision labels {index}/{len(configs)}")
                labels[arch] = elastic.fp_metric(config)
                if (index + 1) % KEEP_EVERY == 0:
                    ctx.keep(key, labels)
        ctx.keep(key, labels)
        y = [labels[arch] for arch in arches]
        ctx.status("")
        ctx.log(f"apq: {self.fp_samples} full-precision labels ({found} kept from an earlier run), "
                f"metric {np.mean(y):.2f} ± {np.std(y):.2f}")
        X = np.array([QuantSubnet.full_precision(c, blocks).features() for c in configs])
        return AccuracyPredictor(self.kind, epochs=self.epochs, seed=ctx.seed).fit(X, y)

    def _quantized_predictor(self, ctx: SearchContext, elastic: ElasticSpace, source: AccuracyPredictor,
                             choices: list[tuple[float, ...]], budgets: list[Budget], blocks: int) -> Predictor | None:
        """The quantization-aware predictor (None: the budget ran out on the labels)."""
        if self.q_samples == 0:
            return source
        rng = np.random.default_rng([ctx.seed, 42])
        candidates: list[QuantSubnet] = []
        for _ in range(self.max_tries * self.q_samples):
            if len(candidates) == self.q_samples:
                break
            candidate = QuantSubnet.from_vector([c[rng.integers(len(c))] for c in choices], blocks)
            if any(b.allows(candidate) for b in budgets):
                candidates.append(candidate)
        records = ctx.evaluate_many([elastic.policy(c) for c in candidates], phase="label")
        if any(r.state == "skipped" for r in records):
            return None
        labelled = [(c, r) for c, r in zip(candidates, records, strict=True) if r.ok]
        if len(labelled) < 2:
            ctx.log(f"apq: {len(labelled)} quantized labels succeeded; searching on the full-precision predictor")
            return source
        X = np.array([c.features() for c, _ in labelled])
        y = [_metric(r) for _, r in labelled]
        if self.transfer == "residual":
            return ResidualTransfer(source, seed=ctx.seed).fit(X, y)
        fresh = AccuracyPredictor(self.kind, epochs=self.epochs, seed=ctx.seed)
        return fresh.fit(X, y, warm_start=source if self.transfer == "warm" else None)


def _features(rows: np.ndarray, blocks: int) -> np.ndarray:
    return np.array([QuantSubnet.from_vector(v, blocks).features() for v in rows])


def _metric(record: Record) -> float:
    return float(record.values["metric"])


def _exact_cost(elastic: ElasticSpace, key: str) -> Callable[[QuantSubnet], float]:
    return lambda candidate: float(getattr(elastic.cost(candidate), key))


def _latency_cost(elastic: ElasticSpace, table: object) -> Callable[[QuantSubnet], float]:
    return lambda candidate: elastic.latency_ms(candidate, table)
