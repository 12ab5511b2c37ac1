"""FID on the digits, shared by the benchmarks: samples against the 360 held-out TEST digits in the shipped digits
feature network's space (``ddpm_lite.metrics``), and the floor, as many TRAINING digits (random draws) against the
same test digits: what a perfect model would score at this sample size."""
from __future__ import annotations

import statistics

import torch


class Scorer:
    """FID of samples against the test digits, and the floor: as many training digits against them."""

    def __init__(self, samples: int):
        from ddpm_lite.data import load_dataset
        from ddpm_lite.metrics import extract_features, load_digits_feature_net

        self.net = load_digits_feature_net(device="cpu")
        self.extract = lambda images: extract_features(images, self.net, batch_size=1024)
        self.test = self.extract(load_dataset("digits", "test").images)
        self.train_images = load_dataset("digits", "train").images
        self.samples = samples

    def fid(self, images) -> float:
        from ddpm_lite.metrics import fid_from_features

        return fid_from_features(self.extract(images), self.test)

    def floor(self, draws: int) -> list[float]:
        if len(self.train_images) < self.samples:
            raise ValueError(f"the floor needs {self.samples} training digits, there are {len(self.train_images)}")
        g = torch.Generator().manual_seed(12345)
        return [self.fid(self.train_images[torch.randperm(len(self.train_images), generator=g)[:self.samples]])
                for _ in range(draws)]


def mean_sd(values) -> str:
    """"mean ± sd" of several values (3 decimals), the value alone for one."""
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 \
        else f"{values[0]:.3f}"
