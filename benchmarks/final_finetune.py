"""How long and at what learning rate must a pruned model be fine-tuned? (compress's FINAL_EPOCHS, LONG_PROBES)

    python benchmarks/final_finetune.py --arch mobilenet-v2 --flops 0.4 \\
        --variants '{"finetune_steps":400,"lr":1e-3}' '{"finetune_steps":1200,"lr":1e-3}' \\
                   '{"finetune_steps":1200,"lr":3e-3}' '{"finetune_steps":2400,"lr":1e-3}'

The uniform policy at ``--flops`` of the original's FLOPs (channels in multiples of 8, as ``compress``
keeps them for ONNX Runtime) of a ``transformers`` model of ``benchmarks/user_models.py`` (same
digits data, split and 100-epoch pretraining, seed ``--seed``), fine-tuned by ``Evaluator`` with
each variant's settings (``finetune_steps``, ``lr``, ``distill``, ...): validation and test
accuracy. Appends one JSON line per variant to benchmarks/results/final_finetune.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import user_models as um  # noqa: E402 - the same data, models and pretraining

import autocompress as ac  # noqa: E402
from autocompress.calls import bind, fit_inputs  # noqa: E402
from autocompress.evaluate import Evaluator  # noqa: E402
from autocompress.finetune import evaluate_metric  # noqa: E402
from autocompress.search.ladders import uniform_policy  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=list(um.ARCHS), default="mobilenet-v2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--flops", type=float, default=0.4)
    parser.add_argument("--variants", nargs="+", type=json.loads, default=[{"finetune_steps": 400, "lr": 1e-3}])
    parser.add_argument("--pretrain-epochs", type=int, default=100)  # 30 for the rows marked so
    parser.add_argument("--cache", default="runs/user_models")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    splits = um.digits(args.seed)
    task = um.loaders(splits, args.seed)
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    model = um.pretrained(args.arch, args.seed, task, Path(args.cache), args.pretrain_epochs)
    space = ac.SearchSpace.from_model(model, fit_inputs(model, task.example_input(1)), output="logits", channel_multiple=8)
    policy = uniform_policy(space, args.flops, "flops")
    run = bind(model, None, "logits")
    original = {"val": evaluate_metric(run, task, "val"), "test": evaluate_metric(run, task, "test")}
    out = um.RESULTS / "final_finetune.jsonl"
    for variant in args.variants:
        started = time.perf_counter()
        result = Evaluator(task, finetune_epochs=0.0, output="logits", seed=args.seed, **variant).evaluate(model, policy, space=space)
        test = evaluate_metric(bind(result.model.eval(), None, "logits"), task, "test")
        row = {"arch": args.arch, "seed": args.seed, "flops": args.flops, "variant": variant, "val": result.metric, "test": test,
               "original": original, "pretrain_epochs": args.pretrain_epochs, "seconds": time.perf_counter() - started, "date": time.strftime("%Y-%m-%d")}
        print(json.dumps(row), flush=True)
        with out.open("a") as file:
            file.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    sys.exit(main())
