"""Test helper: make a search's first inline evaluation wait until a separate worker took one."""

from __future__ import annotations

import subprocess
import time

from autocompress.search import Study
from autocompress.search import runner as runner_module


def search_waits_for_worker(monkeypatch, study: Study, worker: subprocess.Popen, timeout: float = 90) -> None:
    """Patch the runner so its first evaluation starts only once ``worker`` has taken a candidate.

    The search (evaluating inline) and the worker then share the queue however slowly the
    worker process starts (a busy machine can take many seconds to import torch).
    """
    real_run_candidate = runner_module.run_candidate
    waited = []

    def run_candidate_once_the_worker_took_one(spec, policy):
        deadline = time.monotonic() + timeout
        while not waited and len(study.records({"running", "complete"})) < 2:
            assert worker.poll() is None, worker.communicate()[0]
            assert time.monotonic() < deadline, f"the worker took no candidate within {timeout} s"
            time.sleep(0.2)
        waited.append(True)
        return real_run_candidate(spec, policy)

    monkeypatch.setattr(runner_module, "run_candidate", run_candidate_once_the_worker_took_one)
