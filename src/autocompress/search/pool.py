"""The search's local worker processes: a spawned process pool, each process holding the :class:`EvaluationSpec`."""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import torch

from autocompress.policy import Policy
from autocompress.search.evaluation import EvaluationSpec, evaluate_values

_WORKER_SPEC: EvaluationSpec | None = None


def _init_worker(spec: EvaluationSpec) -> None:
    global _WORKER_SPEC
    _WORKER_SPEC = spec
    if spec.threads:
        torch.set_num_threads(spec.threads)


def _work(policy_json: dict) -> tuple[dict[str, float] | None, str | None, float]:
    start = time.perf_counter()
    try:
        values = evaluate_values(_WORKER_SPEC, Policy.from_dict(policy_json))
        return values, None, time.perf_counter() - start
    except Exception as error:  # noqa: BLE001 - a failing candidate must not stop the search
        return None, f"{type(error).__name__}: {error}", time.perf_counter() - start


class WorkerPool:
    """``workers`` processes, started at the first :meth:`submit` (torch threads: ``spec.threads``, or the
    CPUs shared out between them); each future's result is ``(values, error, seconds)``."""

    def __init__(self, spec: EvaluationSpec, workers: int) -> None:
        self.spec = spec
        self.workers = int(workers)
        self._pool: ProcessPoolExecutor | None = None

    def submit(self, policy: Policy) -> Future:
        try:
            return self._executor().submit(_work, policy.to_dict())
        except BrokenProcessPool:
            self._pool = None  # a worker died: start a fresh pool once
        try:
            return self._executor().submit(_work, policy.to_dict())
        except BrokenProcessPool as error:
            raise RuntimeError(
                "the worker processes die as they start; when search() runs from a script with workers > 1, "
                "protect the script's entry point with `if __name__ == '__main__':`"
            ) from error

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self.spec.threads = self.spec.threads or max(1, (os.cpu_count() or 1) // self.workers)
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self.spec,),
            )
        return self._pool

    def shutdown(self) -> None:
        """Stop the processes (if started), cancelling what they have not begun."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
