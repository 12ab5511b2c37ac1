"""Classifier guidance with a tiny *trained* pair: an MLP denoiser and a noisy classifier, both trained by the
Trainer on two labelled blobs. Guidance must move samples drawn for class 1 into blob 1."""
import pytest
import torch
from torch import nn

from ddpm_lite import GaussianDiffusion, get_betas
from ddpm_lite.guidance import LabelBlind, classifier_cond_fn
from ddpm_lite.models import MLPDenoiser
from ddpm_lite.models.nn import timestep_embedding
from ddpm_lite.sampling import generate
from ddpm_lite.train import Trainer


class NoisyPointClassifier(nn.Module):
    """logits of p(y | x_t) for 2-D points: an MLP on the point and the timestep embedding."""

    def __init__(self, hidden=64, num_classes=2):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 + 16, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, num_classes))

    def forward(self, x, t):
        return self.net(torch.cat([x, timestep_embedding(t, 16)], dim=1))


@pytest.fixture(scope="module")
def trained_pair():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(1024) % 2
    x = torch.stack([3.0 * y - 1.5, torch.zeros(1024)], dim=1) + 0.3 * torch.randn(1024, 2, generator=g)
    diffusion = GaussianDiffusion(get_betas("cosine", 100))
    torch.manual_seed(0)
    denoiser = Trainer(MLPDenoiser(hidden=64), diffusion, (x, y), batch_size=256, lr=3e-3, progress=False,
                       device="cpu")
    denoiser.train(400)
    classifier = Trainer(NoisyPointClassifier(), diffusion, (x, y), objective="classifier", batch_size=256,
                         lr=3e-3, progress=False, device="cpu")
    classifier.train(300)
    assert not denoiser.class_cond  # the denoiser never sees labels
    return diffusion, denoiser.ema, classifier.model.eval()


def in_blob_1(diffusion, model, classifier, scale, ddim=False, n=400):
    labels = torch.ones(n, dtype=torch.long)
    x = generate(LabelBlind(model), diffusion, (n, 2), y=labels, ddim=ddim, clip_denoised=False,
                 generator=torch.Generator().manual_seed(1),
                 cond_fn=classifier_cond_fn(classifier, scale) if scale else None)
    return (x[:, 0] > 0).float().mean().item()


@pytest.mark.parametrize("ddim", [False, True])
def test_guidance_raises_label_accuracy_of_a_trained_pair(trained_pair, ddim):
    diffusion, model, classifier = trained_pair
    unguided = in_blob_1(diffusion, model, classifier, 0.0, ddim)
    guided = in_blob_1(diffusion, model, classifier, 3.0, ddim)
    assert 0.3 < unguided < 0.7, unguided  # the unconditional model draws both blobs
    assert guided > 0.9 and guided > unguided + 0.25, (unguided, guided)
    print(f"ddim={ddim}: in blob 1 without guidance {unguided:.2f}, with s = 3 {guided:.2f}")


def test_generate_passes_cond_fn_like_the_loop(trained_pair):
    """generate(cond_fn=...) is p_sample_loop with that cond_fn, from the same noise."""
    diffusion, model, classifier = trained_pair
    labels = torch.ones(16, dtype=torch.long)
    cond_fn = classifier_cond_fn(classifier, 2.0)
    via = generate(LabelBlind(model), diffusion, (16, 2), y=labels, clip_denoised=False, cond_fn=cond_fn,
                   generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)  # generate draws x_T from its generator, then the steps' noise
    noise = torch.randn(16, 2, generator=g)
    direct = diffusion.p_sample_loop(LabelBlind(model), (16, 2), noise=noise, clip_denoised=False, cond_fn=cond_fn,
                                     model_kwargs={"y": labels}, generator=g)
    assert torch.equal(via, direct)
    unguided = generate(LabelBlind(model), diffusion, (16, 2), y=labels, clip_denoised=False,
                        generator=torch.Generator().manual_seed(3))
    assert not torch.allclose(via, unguided)
