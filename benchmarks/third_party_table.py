"""The README's table of third-party architectures: what each method can compress, what is left alone and why.

    python benchmarks/third_party_table.py

Every architecture of ``tests/third_party.py`` (the test suite's: ``transformers`` classes, small
configs, random weights, seed 0), through ``SearchSpace.from_model(model, inputs, output="logits")``
with keyword inputs. Counts Conv/Linear layers (``Conv1D`` too) and, per method, how many the space
can compress; the reasons for what is left alone are grouped. Writes
benchmarks/results/third_party.md.
"""

from __future__ import annotations

import re
import sys
import warnings
from collections import Counter
from pathlib import Path

from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from third_party import ARCHITECTURES  # noqa: E402

from autocompress.layers import is_transposed_linear  # noqa: E402
from autocompress.space import SearchSpace  # noqa: E402


def _short(reason: str) -> str:
    reason = re.sub(r"'[^']*'", "'…'", reason)
    reason = re.sub(r"\([^()]*Error: .*", "(…)", reason)
    reason = re.sub(r"groups=\d+", "groups=g", reason)
    return reason.split(";")[0].strip()


def main() -> None:
    import transformers

    warnings.simplefilter("ignore")
    lines = [
        f"transformers {transformers.__version__}; small configs, random weights (tests/third_party.py); "
        "counts of Conv/Linear layers (`Conv1D` as Linear).",
        "",
        "| architecture | class | params | Conv/Linear | prune | low rank | quant | left alone (why, count) |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for arch in ARCHITECTURES:
        model, example = arch.build(), arch.example()
        space = SearchSpace.from_model(model, example, output="logits")
        layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)) or is_transposed_linear(m)]
        counts = {m: sum(m in space.layers[n].methods for n in layers if n in space.layers) for m in ("prune", "lowrank", "quant")}
        why = Counter()
        for name in layers:
            if name in space.excluded:
                why[f"all: {_short(space.excluded[name])}"] += 1
            elif name in space.layers:
                for method, reason in space.layers[name].reasons.items():
                    if "coupled with" not in reason:  # its group's leader carries the gene
                        why[f"{method}: {_short(reason)}"] += 1
        alone = "; ".join(f"{reason} ({count})" for reason, count in why.most_common())
        params = sum(p.numel() for p in model.parameters())
        lines.append(f"| {arch.name} | `{arch.model}` | {params:,} | {len(layers)} | {counts['prune']} | "
                     f"{counts['lowrank']} | {counts['quant']} | {alone} |")
        print(lines[-1])
    out = ROOT / "benchmarks" / "results" / "third_party.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
