"""Guidance: steering a diffusion model towards a class.

- Classifier guidance (Dhariwal & Nichol 2021, section 4): a classifier p_phi(y | x_t) trained on noisy images;
  its gradient s * grad_x log p_phi(y | x_t) shifts the mean of each ancestral step by Sigma times it
  (Algorithm 1) or the predicted noise by -sqrt(1 - alpha_bar_t) times it for DDIM (Algorithm 2). The shift
  itself lives in :meth:`GaussianDiffusion.condition_mean` / :meth:`~GaussianDiffusion.condition_score`; this
  module builds the ``cond_fn`` they call.
- Classifier-free guidance (Ho & Salimans 2021, NeurIPS workshop; arXiv 2207.12598): one model trained with
  labels dropped to a null label; eps_guided = (1 + w) eps(x_t, y) - w eps(x_t, null), which in score terms is
  grad log p(x_t) + (1 + w) grad log p(y | x_t): classifier guidance with scale s = 1 + w.

:func:`~ddpm_lite.sampling.generate` takes a ``cond_fn``: ``generate(LabelBlind(model), diffusion, shape, y=labels,
cond_fn=classifier_cond_fn(classifier, scale))``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def classifier_cond_fn(classifier, scale: float):
    """``cond_fn(x_t, t, y)`` returning ``scale * grad_x log p(y | x_t)`` for the samplers' ``cond_fn`` hook.

    ``classifier(x_t, t)`` returns logits (B, num_classes); ``y`` reaches it through ``model_kwargs``.
    """
    def cond_fn(x, t, y=None, **_):
        if y is None:
            raise ValueError("classifier guidance needs the target labels: pass model_kwargs={'y': labels}")
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            log_probs = F.log_softmax(classifier(x_in, t).float(), dim=-1)
            selected = log_probs[torch.arange(len(y), device=y.device), y]
            return torch.autograd.grad(selected.sum(), x_in)[0] * scale
    return cond_fn


class LabelBlind(torch.nn.Module):
    """An unconditional model that accepts (and ignores) the labels the classifier's ``cond_fn`` needs.

    With classifier guidance the labels travel in ``model_kwargs`` to the classifier, and the samplers hand the
    same kwargs to the model (guided-diffusion's ``classifier_sample.py`` wraps its model alike).
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x, t, y=None, **kwargs):
        return self.model(x, t, **kwargs)


class ClassifierFreeGuidance:
    """Wraps a class-conditional eps-model: ``(1 + w) eps(x, y) - w eps(x, null)``, one batched call.

    ``null_label`` is the label the model was trained with for "no class" (``num_classes`` for our U-Net).
    A learned variance (the output's second half of channels) is taken from the conditional branch.
    """

    def __init__(self, model, guidance_scale: float, null_label: int):
        self.model, self.w, self.null_label = model, guidance_scale, null_label

    def __call__(self, x, t, y=None, **kwargs):
        if y is None:
            raise ValueError("classifier-free guidance needs labels: pass model_kwargs={'y': labels}")
        null = torch.full_like(y, self.null_label)
        out = self.model(torch.cat([x, x]), torch.cat([t, t]), y=torch.cat([y, null]), **kwargs)
        cond, uncond = out.chunk(2)
        channels = x.shape[1]
        eps = (1 + self.w) * cond[:, :channels] - self.w * uncond[:, :channels]
        return torch.cat([eps, cond[:, channels:]], dim=1)

    def parameters(self):  # so the samplers find the model's device
        return self.model.parameters() if hasattr(self.model, "parameters") else iter(())
