"""DistributedDataParallel on the CPU: two gloo processes under torchrun train like one process."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from ddpm_lite.checkpoint import load_checkpoint
from ddpm_lite.configs import ExperimentConfig
from ddpm_lite.train import Trainer

WORKER = Path(__file__).with_name("ddp_worker.py")
sys.path.insert(0, str(WORKER.parent))
from ddp_worker import points  # noqa: E402  (the data both runs train on)

CHANGES = {"diffusion.num_timesteps": "50", "model.hidden": "32", "batch_size": "64"}

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def test_two_processes_train_like_one(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DDPM_LITE_DEVICE": "cpu", "PYTHONUNBUFFERED": "1"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(WORKER), str(tmp_path), *(f"{k}={v}" for k, v in CHANGES.items())]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    for a, b in zip(ranks[0]["params"] + ranks[0]["ema"], ranks[1]["params"] + ranks[1]["ema"]):
        assert torch.equal(a, b)  # DDP keeps the replicas identical
    assert ranks[0]["loss"] == ranks[1]["loss"]  # the logged loss is the mean over processes

    # saved once, by rank 0 only: the periodic save (step 3) and the final one (step 6)
    assert len(ranks[0]["saves"]) == 2 and ranks[1]["saves"] == []
    assert {p.name for p in tmp_path.iterdir()} == {"checkpoint.pt", "checkpoint.prev.pt", "rank0.pt", "rank1.pt"}
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 6 and state["world_size"] == 2 and len(state["rng"]["torch"]) == 2
    for saved, final in zip(state["model"].values(), ranks[0]["params"]):
        assert torch.equal(saved, final)

    # each process took its half of the global batch, t and noise: one process with the whole batch agrees
    config = ExperimentConfig.preset("toy").override([f"{k}={v}" for k, v in CHANGES.items()])
    single = Trainer.from_config(config, points(), progress=False, device="cpu")
    single.train(6)
    for p, q in zip(single.model.parameters(), ranks[0]["params"]):
        torch.testing.assert_close(p.detach(), q, atol=1e-5, rtol=1e-4)
    assert single.loss_history == pytest.approx(ranks[0]["loss"], rel=1e-4)
