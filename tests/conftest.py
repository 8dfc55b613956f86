import os
import tempfile

import pytest
import torch

# keep the zoo's cache inside the test session unless the caller chose one
os.environ.setdefault("AUTOCOMPRESS_CACHE", tempfile.mkdtemp(prefix="autocompress-test-cache-"))
torch.set_num_threads(2)


@pytest.fixture()
def one_thread():
    """Tiny models: one torch thread is faster, and much faster on a busy machine (autocompress.threads)."""
    from autocompress.threads import single_threaded  # after the cache variable above is set

    with single_threaded():
        yield
