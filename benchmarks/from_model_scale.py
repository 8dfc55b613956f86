"""How long ``SearchSpace.from_model`` and ``space.cost`` take on a ResNet-50-size model (issue 19).

    python benchmarks/from_model_scale.py --threads 2 [--repeats 5] [--wrapped]

``transformers``' ``ResNetForImageClassification`` with its default config (ResNet-50: depths
3/4/6/3, bottlenecks, 23.5M parameters), random weights (seed 0), one 3x224x224 image. Times
``from_model`` (median of ``--repeats``, one warm-up) called the user's way (keyword input
``pixel_values``, ``output="logits"``) and ``space.cost`` on 200 random policies (median per call).
``--wrapped`` calls through a wrapper whose ``forward(x)`` returns ``inner(pixel_values=x).logits``
instead (what users had to write before; older versions of autocompress accept only that).

Writes benchmarks/results/from_model_scale[_wrapped].json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch
from torch import nn

RESULTS = Path(__file__).parent / "results"


class Wrapped(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(pixel_values=x).logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--policies", type=int, default=200)
    parser.add_argument("--wrapped", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    import transformers

    from autocompress.space import SearchSpace

    torch.manual_seed(0)
    model = transformers.ResNetForImageClassification(transformers.ResNetConfig()).eval()
    params = sum(p.numel() for p in model.parameters())
    image = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    if args.wrapped:
        model, example, kwargs = Wrapped(model).eval(), image, {}
    else:
        example, kwargs = {"pixel_values": image}, {"output": "logits"}
    SearchSpace.from_model(model, example, **kwargs)  # warm-up
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        space = SearchSpace.from_model(model, example, **kwargs)
        seconds.append(time.perf_counter() - start)
    policies = [space.random_policy(seed) for seed in range(args.policies)]
    cost_ms = []
    for policy in policies:
        start = time.perf_counter()
        space.cost(policy)
        cost_ms.append((time.perf_counter() - start) * 1e3)
    result = {
        "model": "transformers ResNetForImageClassification(ResNetConfig()) (ResNet-50)",
        "transformers": transformers.__version__, "torch": torch.__version__, "params": params,
        "input": "1x3x224x224", "wrapped": args.wrapped, "threads": args.threads,
        "layers": len(space.layers), "excluded": len(space.excluded),
        "from_model_s_median": statistics.median(seconds), "from_model_s": seconds,
        "cost_ms_median": statistics.median(cost_ms), "policies": args.policies,
        "machine": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d"),
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"from_model_scale{'_wrapped' if args.wrapped else ''}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{params / 1e6:.1f}M params, {len(space.layers)} layers: from_model {result['from_model_s_median']:.2f} s "
          f"(median of {args.repeats}), space.cost {result['cost_ms_median']:.2f} ms (median of {args.policies})")


if __name__ == "__main__":
    main()
