import os
import tempfile

import pytest
import torch

# keep the zoo's cache inside the test session unless the caller chose one
os.environ.setdefault("AUTOCOMPRESS_CACHE", tempfile.mkdtemp(prefix="autocompress-test-cache-"))
# one torch thread per pytest-xdist worker (the suite runs on 2 workers: `-n 2` in pyproject), else 2
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


@pytest.fixture()
def one_thread():
    """Tiny models: one torch thread is faster, and much faster on a busy machine (autocompress.threads)."""
    from autocompress.threads import single_threaded  # after the cache variable above is set

    with single_threaded():
        yield
