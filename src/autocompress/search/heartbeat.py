"""A thread that keeps a process's RUNNING candidates alive in the study (stale detection, :mod:`~autocompress.search.study`)."""

from __future__ import annotations

import threading

from autocompress.search.study import HEARTBEAT_SECONDS, Study


class Heartbeat:
    """A thread that keeps the study's RUNNING candidates of this process alive."""

    def __init__(self, study: Study) -> None:
        self.study = study
        self.numbers: set[int] = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(HEARTBEAT_SECONDS):
            with self.lock:
                numbers = list(self.numbers)
            try:
                self.study.heartbeat(numbers)
            except Exception:  # noqa: BLE001 - a missed beat is retried
                pass

    def add(self, number: int) -> None:
        with self.lock:
            self.numbers.add(number)

    def remove(self, number: int) -> None:
        with self.lock:
            self.numbers.discard(number)

    def close(self) -> None:
        self.stop.set()
