"""Negative log-likelihood in bits/dim (Improved DDPM sec. 3 and Table 2; DDPM Table 2).

The variational bound ``L_vlb = L_T + sum_{t>=1} L_{t-1} + L_0`` of each test image, from
:meth:`GaussianDiffusion.calc_bpd_loop` (every timestep, in bits/dim), averaged over a test set in batches.
It is an upper bound on the NLL; its Monte Carlo noise (one x_t per term) averages out over the images.
"""
from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from ..runtime import model_device


def bits_per_dim(diffusion, model, images, batch_size: int = 64, model_kwargs_fn=None, progress: bool = True,
                 clip_denoised: bool = True, device: torch.device | str | None = None,
                 generator: torch.Generator | None = None) -> dict:
    """The variational bound in bits/dim of ``images`` under ``model``, with its standard error and its terms.

    ``images``: a tensor (N, C, H, W) in [-1, 1] or an :class:`~ddpm_lite.data.ImageDataset` (e.g. the test
    split). ``model_kwargs_fn(index)`` gives the ``model_kwargs`` of a batch from the int64 positions ``index``
    of its images, e.g. ``lambda i: {"y": labels[i]}`` for a class-conditional model; tensors in it are moved
    to ``device`` (default: the model's device). ``generator`` draws the noise of every x_t (on ``device``).

    Returns a dict of floats (means over the images) unless noted:

    * ``mean``: the total bits/dim; ``stderr``: its standard error (std / sqrt(N); NaN for one image);
    * ``prior_bpd`` (L_T), ``decoder_bpd`` (L_0), ``kl_bpd`` (sum of L_1 .. L_{T-1});
      ``mean == prior_bpd + decoder_bpd + kl_bpd``;
    * ``vb`` (T,): the mean of each term L_t, entry t = timestep t; ``xstart_mse``, ``mse`` (T,): the mean
      errors of the predicted x_0 and eps (numpy float64 arrays);
    * ``total_bpd`` (N,): each image's bits/dim (a CPU float64 tensor); ``num_images``: N.
    """
    from ..data import ImageDataset

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not isinstance(images, ImageDataset):
        images = torch.as_tensor(images)
        if images.ndim < 2 or not images.is_floating_point():
            raise ValueError(f"images must be a float tensor (N, ...) in [-1, 1], got {tuple(images.shape)} "
                             f"{images.dtype}")
    n = len(images)
    if n == 0:
        raise ValueError("no images")
    if device is None:
        device = model_device(model)
    totals, priors, vbs, xstart_mses, mses = [], [], [], [], []
    with tqdm(total=n, desc="bits/dim", unit="img", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            index = torch.arange(start, min(start + batch_size, n))
            x = (images[index][0] if isinstance(images, ImageDataset) else images[index]).to(device)
            kwargs = _to_device(model_kwargs_fn(index), device) if model_kwargs_fn is not None else None
            out = diffusion.calc_bpd_loop(model, x, clip_denoised=clip_denoised, model_kwargs=kwargs,
                                          progress=progress, generator=generator)
            totals.append(out["total_bpd"].double().cpu())
            priors.append(out["prior_bpd"].double().cpu())
            vbs.append(out["vb"].double().sum(0).cpu())
            xstart_mses.append(out["xstart_mse"].double().sum(0).cpu())
            mses.append(out["mse"].double().sum(0).cpu())
            bar.update(len(index))
            bar.set_postfix(bpd=f"{torch.cat(totals).mean().item():.4f}")
    total = torch.cat(totals)
    vb = torch.stack(vbs).sum(0) / n
    return {
        "mean": total.mean().item(),
        "stderr": total.std().item() / math.sqrt(n) if n > 1 else float("nan"),
        "prior_bpd": torch.cat(priors).mean().item(),
        "decoder_bpd": vb[0].item(),
        "kl_bpd": vb[1:].sum().item(),
        "vb": vb.numpy(),
        "xstart_mse": (torch.stack(xstart_mses).sum(0) / n).numpy(),
        "mse": (torch.stack(mses).sum(0) / n).numpy(),
        "total_bpd": total,
        "num_images": n,
    }


def _to_device(kwargs, device):
    if not isinstance(kwargs, dict):
        raise TypeError(f"model_kwargs_fn must return a dict, got {type(kwargs).__name__}")
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}

