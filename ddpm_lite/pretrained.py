"""The small digits models shipped with the package, so notebooks show good samples in seconds.

Each was trained by the command line from a preset (``make checkpoints`` reproduces them; the exact commands
and seeds are in ``ddpm_lite/checkpoints/README.md``):

- ``digits``: unconditional U-Net, cosine schedule, learned variance (hybrid loss).
- ``digits_cond``: class-conditional U-Net, trained with 10% of labels dropped (classifier-free guidance).
- ``digits_classifier``: the noisy-image classifier p(y | x_t) for classifier guidance.
"""
from __future__ import annotations

from pathlib import Path

from .checkpoint import CheckpointNotFoundError, load_model

CHECKPOINT_DIR = Path(__file__).parent / "checkpoints"
PRETRAINED = ("digits", "digits_cond", "digits_classifier")


def pretrained_path(name: str) -> Path:
    if name not in PRETRAINED:
        raise ValueError(f"unknown pretrained model {name!r}: choose one of {list(PRETRAINED)}")
    return CHECKPOINT_DIR / f"{name}.pt"


def load_pretrained(name: str, device=None):
    """(model, diffusion, config) of a shipped model, with its EMA weights, in eval mode."""
    path = pretrained_path(name)
    if not path.exists():
        raise CheckpointNotFoundError(f"the shipped checkpoint {path} is missing: run `make checkpoints`, or train "
                                      f"it with `ddpm-lite train --preset {name}`")
    return load_model(path, device=device)
