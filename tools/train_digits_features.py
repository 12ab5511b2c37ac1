"""Train the digits feature network shipped as ``ddpm_lite/checkpoints/digits_features.pt``.

    OMP_NUM_THREADS=1 python tools/train_digits_features.py            # writes the .pt and its .json note

Deterministic: one CPU thread, ``torch.use_deterministic_algorithms(True)``, every random draw from generators
seeded by ``--seed``; the same torch version on the same kind of CPU gives the same bytes. Trains on the digits
*train* split only (1437 images), a fixed number of epochs, no model selection on the test split; then records
the test accuracy (also on "digits16", read through the net's 2x downsampling) and the digits FID floor (test
split against train split, with these features) in the JSON note next to the checkpoint.

Augmentation: random affine maps of the 8x8 images (shift up to 1 pixel, rotation up to 12 degrees, scale
0.9-1.1, bilinear, background -1), and for a quarter of each batch the 8x8 -> 16x16 -> 8x8 round trip that
16x16 inputs go through.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ddpm_lite.data import batch_indices, load_dataset
from ddpm_lite.metrics.features import (
    CHECKPOINT_FORMAT,
    DIGITS_CHECKPOINT,
    DigitsFeatureNet,
)


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random small affine maps (and the 16x16 round trip for a quarter of the batch) of (B, 1, 8, 8) images."""
    b = len(x)
    u = torch.rand(b, 4, generator=generator) * 2 - 1
    angle = u[:, 0] * math.radians(12)
    scale = 1 + 0.1 * u[:, 1]
    shift = u[:, 2:] * (2 / 8)  # up to one pixel, in [-1, 1] grid units
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1
    round_trip = torch.rand(b, generator=generator) < 0.25
    if round_trip.any():
        up = F.interpolate(out[round_trip], size=(16, 16), mode="bicubic", antialias=True, align_corners=False)
        out[round_trip] = F.adaptive_avg_pool2d(up.clamp(-1, 1), 8)
    return out


@torch.no_grad()
def accuracy(net: DigitsFeatureNet, images: torch.Tensor, labels: torch.Tensor) -> float:
    net.eval()
    return (net.logits(images).argmax(1) == labels).double().mean().item()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--label-smoothing", type=float, default=0.05)
    parser.add_argument("--out", type=Path, default=DIGITS_CHECKPOINT)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    x_train, y_train = train.images, train.labels
    net = DigitsFeatureNet()
    steps_per_epoch = math.ceil(len(train) / args.batch_size)
    total = args.epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    start = time.time()
    for step in range(total):
        net.train()
        idx = batch_indices(len(train), args.batch_size, step, seed=args.seed)
        x, y = augment(x_train[idx], generator), y_train[idx]
        loss = F.cross_entropy(net.logits(x), y, label_smoothing=args.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if (step + 1) % (10 * steps_per_epoch) == 0:
            print(f"epoch {(step + 1) // steps_per_epoch:3d}  loss {loss.item():.4f}  "
                  f"train acc {accuracy(net, x_train, y_train):.4f}  ({time.time() - start:.0f} s)", flush=True)
    net.eval()

    test16 = load_dataset("digits16", "test")
    result = {
        "test_accuracy": accuracy(net, test.images, test.labels),
        "test_accuracy_digits16": accuracy(net, test16.images, test16.labels),
        "train_accuracy": accuracy(net, x_train, y_train),
    }
    state_dict = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": CHECKPOINT_FORMAT, "config": net.config, "state_dict": state_dict}, args.out)

    from ddpm_lite.metrics.fid import extract_features, fid_from_features

    f_train = extract_features(x_train, net)
    f_test = extract_features(test.images, net)
    note = {
        "file": args.out.name,
        "sha256": hashlib.sha256(args.out.read_bytes()).hexdigest(),
        "bytes": args.out.stat().st_size,
        "parameters": sum(p.numel() for p in net.parameters()),
        "architecture": "DigitsFeatureNet" + json.dumps(net.config),
        **{k: round(v, 6) for k, v in result.items()},
        "test_images": len(test),
        "fid_test_vs_train": round(fid_from_features(f_test, f_train), 4),
        "feature_rank_train": int(torch.linalg.matrix_rank(torch.from_numpy(f_train).double()
                                                           - torch.from_numpy(f_train).double().mean(0))),
        "command": "OMP_NUM_THREADS=1 python tools/train_digits_features.py "
                   + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
        "seed": args.seed,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    args.out.with_suffix(".json").write_text(json.dumps(note, indent=2) + "\n")
    print(json.dumps(note, indent=2))
    print(f"trained in {time.time() - start:.0f} s")
    return note


if __name__ == "__main__":
    main()
