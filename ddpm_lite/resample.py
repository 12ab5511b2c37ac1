"""Timestep samplers for training (Improved DDPM section 3.3).

A sampler draws t ~ p(t) and returns weights 1 / (T p(t)), so that E[weight * L_t] equals the mean over t of
L_t: the loss stays an unbiased estimate of L_vlb / T whatever p is.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist


class ScheduleSampler:
    """Base class: subclasses define :meth:`weights`, the unnormalised p(t)."""

    def __init__(self, num_timesteps: int):
        self.num_timesteps = num_timesteps

    def weights(self) -> np.ndarray:
        raise NotImplementedError

    def sample(self, batch_size: int, device=None, generator: torch.Generator | None = None):
        """Draw ``batch_size`` timesteps; returns (t, weights), both on ``device``."""
        w = self.weights()
        p = torch.from_numpy(w / w.sum())
        t = torch.multinomial(p, batch_size, replacement=True, generator=generator)
        weights = 1.0 / (self.num_timesteps * p[t])
        return t.to(device), weights.float().to(device)

    def update_with_local_losses(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Report this process's per-example losses; a no-op for samplers that do not learn."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class UniformSampler(ScheduleSampler):
    """t uniform on {0, ..., T-1}: every weight is 1."""

    def weights(self) -> np.ndarray:
        return np.ones(self.num_timesteps)


class LossSecondMomentResampler(ScheduleSampler):
    """p(t) proportional to sqrt(E[L_t^2]) over the last ``history_per_term`` losses at each t (Improved DDPM
    §3.3, eq. 18), uniform until every t has a full history ("warm", as in the paper); mixed with a uniform
    ``uniform_prob``, which is the reference code's (improved-diffusion), not the paper's."""

    def __init__(self, num_timesteps: int, history_per_term: int = 10, uniform_prob: float = 0.001):
        super().__init__(num_timesteps)
        self.history_per_term = history_per_term
        self.uniform_prob = uniform_prob
        self.loss_history = np.zeros((num_timesteps, history_per_term), dtype=np.float64)
        self.loss_counts = np.zeros(num_timesteps, dtype=np.int64)

    def warmed_up(self) -> bool:
        return bool((self.loss_counts == self.history_per_term).all())

    def weights(self) -> np.ndarray:
        if not self.warmed_up():
            return np.ones(self.num_timesteps)
        w = np.sqrt(np.mean(self.loss_history ** 2, axis=-1))
        w = w / w.sum()
        return w * (1 - self.uniform_prob) + self.uniform_prob / len(w)

    def update_with_local_losses(self, t, losses) -> None:
        """Record losses; under torch.distributed, those of every process (so all keep the same p)."""
        t, losses = t.detach().reshape(-1), losses.detach().float().reshape(-1)
        if dist.is_available() and dist.is_initialized():
            gathered_t = [torch.zeros_like(t) for _ in range(dist.get_world_size())]
            gathered_l = [torch.zeros_like(losses) for _ in range(dist.get_world_size())]
            dist.all_gather(gathered_t, t)
            dist.all_gather(gathered_l, losses)
            t, losses = torch.cat(gathered_t), torch.cat(gathered_l)
        self.update_with_all_losses(t.cpu().tolist(), losses.cpu().tolist())

    def update_with_all_losses(self, ts, losses) -> None:
        for t, loss in zip(ts, losses):
            if self.loss_counts[t] == self.history_per_term:  # full: drop the oldest
                self.loss_history[t, :-1] = self.loss_history[t, 1:]
                self.loss_history[t, -1] = loss
            else:
                self.loss_history[t, self.loss_counts[t]] = loss
                self.loss_counts[t] += 1

    def state_dict(self) -> dict:
        return {"loss_history": torch.from_numpy(self.loss_history.copy()),
                "loss_counts": torch.from_numpy(self.loss_counts.copy())}

    def load_state_dict(self, state: dict) -> None:
        history, counts = state["loss_history"].numpy(), state["loss_counts"].numpy()
        if history.shape != self.loss_history.shape:
            raise ValueError(f"sampler state has history of shape {history.shape}, this sampler needs "
                             f"{self.loss_history.shape}: it comes from another number of timesteps or history")
        self.loss_history, self.loss_counts = history.astype(np.float64), counts.astype(np.int64)


SAMPLERS = {"uniform": UniformSampler, "loss-second-moment": LossSecondMomentResampler}


def create_named_schedule_sampler(name: str, num_timesteps: int) -> ScheduleSampler:
    """``"uniform"`` or ``"loss-second-moment"``."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown timestep sampler {name!r}: choose one of {sorted(SAMPLERS)}")
    return SAMPLERS[name](num_timesteps)
