"""Run by tests/test_ddp.py under torchrun: train a tiny toy model a few steps, dump this rank's result.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_worker.py OUT_DIR KEY=VALUE...
"""
import sys
from pathlib import Path

import torch

from ddpm_lite import train as train_module
from ddpm_lite.configs import ExperimentConfig
from ddpm_lite.train import Trainer, close_distributed


def points() -> torch.Tensor:
    """The training data: a fixed cloud of 2-D points (no scikit-learn import: faster start)."""
    return torch.randn(1000, 2, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.0, 0.3])


def main(out: Path, overrides: list[str]) -> None:
    saves = []
    original = train_module.save_checkpoint

    def counting_save(state, path, **kwargs):
        saves.append(str(path))
        return original(state, path, **kwargs)

    train_module.save_checkpoint = counting_save
    config = ExperimentConfig.preset("toy").override(overrides)
    trainer = Trainer.from_config(config, points(), progress=False, device="cpu",
                                  checkpoint_path=out / "checkpoint.pt", save_every=3)
    trainer.train(6)
    torch.save({"rank": trainer.rank, "world_size": trainer.world_size, "saves": saves,
                "params": [p.detach().clone() for p in trainer.model.parameters()],
                "ema": [p.detach().clone() for p in trainer.ema.parameters()],
                "loss": trainer.loss_history}, out / f"rank{trainer.rank}.pt")
    close_distributed()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])  # OUT_DIR KEY=VALUE...
