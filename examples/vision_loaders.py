"""A `transformers` vision model from DataLoaders to a deployable ONNX file, with compress()'s defaults.

    python examples/vision_loaders.py [--arch mobilenet-v2|resnet] [--target latency_ratio<=0.5]

The model is trained here first (a few minutes on 2 CPU cores) on scikit-learn's digits, upsampled
to 3x32x32 RGB: stand-ins for your own trained model and your own loaders. Everything is stored in
runs/examples.db: run it again and it resumes (or just reads the result).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

import autocompress as ac

MODELS = {
    "mobilenet-v2": lambda: transformers.MobileNetV2ForImageClassification(
        transformers.MobileNetV2Config(num_channels=3, image_size=32, depth_multiplier=0.5, num_labels=10)),
    "resnet": lambda: transformers.ResNetForImageClassification(
        transformers.ResNetConfig(num_channels=3, embedding_size=32, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 1, 1],
                                  layer_type="basic", num_labels=10)),
}


def loaders() -> tuple[DataLoader, DataLoader, DataLoader]:
    digits = load_digits()
    x = F.interpolate(torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16, size=32, mode="bilinear")
    x, y = (x.repeat(1, 3, 1, 1) - 0.5) / 0.5, torch.tensor(digits.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]

    def loader(rows: slice, shuffle: bool = False) -> DataLoader:
        return DataLoader(TensorDataset(x[rows], y[rows]), batch_size=64, shuffle=shuffle)

    return loader(slice(0, 1000), True), loader(slice(1000, 1400)), loader(slice(1400, None))


def trained(arch: str, train_loader: DataLoader, path: Path) -> torch.nn.Module:
    torch.manual_seed(0)
    model = MODELS[arch]()
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(20):
        for images, labels in train_loader:
            optimizer.zero_grad()
            F.cross_entropy(model(images).logits, labels).backward()
            optimizer.step()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=list(MODELS), default="mobilenet-v2")
    parser.add_argument("--target", default="latency_ratio<=0.5")
    args = parser.parse_args()
    train_loader, val_loader, test_loader = loaders()
    model = trained(args.arch, train_loader, Path("runs") / f"example-{args.arch}.pt")

    task = ac.Task.from_loaders(train_loader, val_loader, test_loader)
    result = ac.compress(model, task, target=args.target, max_drop=1.0, budget=24, storage="sqlite:///runs/examples.db")
    result.plot(f"runs/example-{args.arch}-front.png")
    best = result.best()
    if best is None:
        print(result.nearest())
        return
    path = best.export(f"runs/example-{args.arch}")
    deploy = json.loads((path.parent / "meta.json").read_text())["deploy"]
    print(f"{path}: {deploy['chosen']}, " + ", ".join(
        f"{name} {v['metric']:.2f} % at {v['latency_ratio']:.2f}x" for name, v in deploy["variants"].items() if v.get("made")))


if __name__ == "__main__":
    main()
