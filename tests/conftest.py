import os
import tempfile

import torch

# keep the zoo's cache inside the test session unless the caller chose one
os.environ.setdefault("AUTOCOMPRESS_CACHE", tempfile.mkdtemp(prefix="autocompress-test-cache-"))
torch.set_num_threads(2)
