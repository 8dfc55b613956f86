"""Where all-MiniLM-L6-v2's time goes in ONNX Runtime on this CPU, fp32 vs dynamic int8 (issue 8's 2x goal).

    python benchmarks/minilm_profile.py          # writes benchmarks/results/minilm_profile.{json,md}

The original model exported to fp32 ONNX, and the same file with every MatMul in ONNX Runtime
dynamic int8 with per-channel weights (what ``export_dynamic_int8`` makes of an all-8-bit
policy). Latency side by side (``compare_latency``), then ONNX Runtime's profiler: the share of
kernel time per operator type. Needs the extra: pip install -e '.[transformers]'.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import onnxruntime
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic

from autocompress.export import compare_latency, export_onnx
from autocompress.hardware.targets import cpu_model
from autocompress.zoo.minilm import load_minilm, sentences, tokenize

RESULTS = Path(__file__).parent / "results"


def profile(path: Path, inputs: torch.Tensor, threads: int, calls: int) -> dict[str, float]:
    """Share (%) of ONNX Runtime kernel time per operator type over ``calls`` runs."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads, options.enable_profiling = threads, 1, True
    options.profile_file_prefix = str(path.with_suffix(""))
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: inputs.numpy()}
    for _ in range(calls):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    times: collections.Counter = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            times[event["args"]["op_name"]] += event["dur"]
    total = sum(times.values())
    return {op: 100.0 * t / total for op, t in times.most_common()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--calls", type=int, default=10, help="profiled calls per file")
    parser.add_argument("--output", type=Path, default=RESULTS / "minilm_profile")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_minilm()
    inputs = tokenize(tokenizer, [text for _, text in sentences()][: args.batch], args.seq_len)
    with tempfile.TemporaryDirectory(prefix="minilm-profile-") as folder:
        fp32 = export_onnx(model, Path(folder) / "fp32.onnx", inputs[:2])
        int8 = Path(folder) / "int8.onnx"
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"], per_channel=True)
        files = {"fp32": fp32, "int8 (MatMul, per-channel)": int8}
        timings = compare_latency(files, inputs, threads=args.threads, warmup=5, repeats=10, rounds=3)
        shares = {name: profile(path, inputs, args.threads, args.calls) for name, path in files.items()}
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {cpu_model()}, {os.cpu_count()} cores",
              "onnxruntime": onnxruntime.__version__, "settings": {k: str(v) for k, v in vars(args).items()},
              "latency_ms": {k: v.median_ms for k, v in timings.items()}, "shares": shares}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(result, indent=2))
    base = timings["fp32"].median_ms
    lines = ["# all-MiniLM-L6-v2 in ONNX Runtime: where the time goes", "",
             f"Command `python benchmarks/minilm_profile.py`; {result['date']}; {result['machine']}; onnxruntime "
             f"{result['onnxruntime']}; batch {args.batch} sentences × {args.seq_len} tokens, {args.threads} threads.", "",
             "| file | median ms | × vs fp32 | top operators (% of kernel time) |", "|---|---:|---:|---|"]
    for name, timing in timings.items():
        top = ", ".join(f"{op} {share:.1f}" for op, share in list(shares[name].items())[:5])
        lines.append(f"| {name} | {timing.median_ms:.1f} | {base / timing.median_ms:.2f} | {top} |")
    int8_name = "int8 (MatMul, per-channel)"
    int8_ms = timings[int8_name].median_ms
    leftover = shares[int8_name].get("MatMul", 0.0) * int8_ms / 100  # activation x activation MatMuls, fp32 in both
    fp32_linear = shares["fp32"].get("MatMul", 0.0) * base / 100 - leftover
    int8_linear = sum(shares[int8_name].get(op, 0.0) for op in ("DynamicQuantizeMatMul", "MatMulIntegerToFloat",
                                                                  "DynamicQuantizeLinear", "MatMulInteger")) * int8_ms / 100
    result["linear_ms"] = {"fp32": fp32_linear, "int8": int8_linear}
    args.output.with_suffix(".json").write_text(json.dumps(result, indent=2))
    lines += ["", f"The Linear layers' GEMMs: {fp32_linear:.1f} ms in fp32, {int8_linear:.1f} ms in int8 "
              f"({fp32_linear / int8_linear:.2f}× faster; the attention's activation × activation MatMuls, fp32 in both "
              f"files, {leftover:.1f} ms, taken out). Everything else is unchanged by int8."]
    args.output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
