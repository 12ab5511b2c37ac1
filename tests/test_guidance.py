"""Guidance with exact models of a two-class mixture: no training, so the expected answer is known."""
import pytest
import torch

from ddpm_lite import GaussianDiffusion, get_betas, respace
from ddpm_lite.course.analytic import GaussianMixture
from ddpm_lite.guidance import ClassifierFreeGuidance, classifier_cond_fn

MEANS = [[-0.6, 0.0], [0.6, 0.0]]


def near_class_1(x):
    return (x[:, 0] > 0).float().mean().item()


@pytest.fixture(scope="module")
def setup():
    diffusion = GaussianDiffusion(get_betas("cosine", 200))
    data = GaussianMixture(MEANS, std=0.05)
    return diffusion, data


def sample(diffusion, model, n=400, seed=0, ddim=False, **kwargs):
    loop = diffusion.ddim_sample_loop if ddim else diffusion.p_sample_loop
    return loop(model, (n, 2), generator=torch.Generator().manual_seed(seed), **kwargs)


def test_unguided_samples_cover_both_classes(setup):
    diffusion, data = setup
    x = sample(diffusion, data.eps_model(diffusion))
    assert 0.4 < near_class_1(x) < 0.6


@pytest.mark.parametrize("ddim", [False, True])
def test_classifier_guidance_moves_samples_to_the_class(setup, ddim):
    diffusion, data = setup
    y = torch.ones(400, dtype=torch.long)
    cond_fn = classifier_cond_fn(data.classifier(diffusion), scale=1.0)
    x = sample(diffusion, data.eps_model(diffusion), ddim=ddim, cond_fn=cond_fn, model_kwargs={"y": y})
    assert near_class_1(x) > 0.97


def test_classifier_guidance_works_with_respacing(setup):
    diffusion, data = setup
    spaced = respace(diffusion, 25)
    y = torch.zeros(400, dtype=torch.long)
    cond_fn = classifier_cond_fn(data.classifier(diffusion), scale=2.0)  # the classifier sees original t
    x = sample(spaced, data.eps_model(diffusion), cond_fn=cond_fn, model_kwargs={"y": y})
    assert near_class_1(x) < 0.03


def test_guidance_gradient_is_the_exact_score_of_the_classifier(setup):
    diffusion, data = setup
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.full((5,), 100)
    y = torch.tensor([0, 1, 0, 1, 1])
    grad = classifier_cond_fn(data.classifier(diffusion), scale=3.0)(x, t, y=y)
    eps = 1e-5  # central differences in float64: error ~ eps^2
    numeric = torch.zeros_like(x)
    for d in range(2):
        shift = torch.zeros_like(x)
        shift[:, d] = eps
        lp = lambda z: data.log_posterior(diffusion, z, t)[torch.arange(5), y]
        numeric[:, d] = (lp(x + shift) - lp(x - shift)) / (2 * eps)
    assert torch.allclose(grad, 3.0 * numeric, rtol=1e-6, atol=1e-8)


def test_classifier_free_guidance(setup):
    diffusion, data = setup
    model = data.eps_model(diffusion)
    y = torch.ones(400, dtype=torch.long)
    cfg = ClassifierFreeGuidance(model, guidance_scale=0.0, null_label=2)
    assert near_class_1(sample(diffusion, cfg, model_kwargs={"y": y})) > 0.97  # w = 0: the conditional model
    x, t = torch.randn(4, 2), torch.full((4,), 50)
    yy = torch.tensor([0, 1, 1, 0])
    w = 2.5
    expected = (1 + w) * model(x, t, y=yy) - w * model(x, t, y=torch.full_like(yy, 2))
    assert torch.allclose(ClassifierFreeGuidance(model, w, 2)(x, t, y=yy), expected, atol=1e-6)


def test_cfg_keeps_the_learned_variance_of_the_conditional_branch():
    def model(x, t, y):
        return torch.cat([y[:, None].float().expand_as(x), 10 + y[:, None].float().expand_as(x)], dim=1)
    out = ClassifierFreeGuidance(model, 1.0, null_label=5)(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long),
                                                           y=torch.tensor([1, 2]))
    assert torch.equal(out[:, 3:], torch.tensor([[11.0] * 3, [12.0] * 3]))
    assert torch.equal(out[:, :3], torch.tensor([[2 * 1 - 5.0] * 3, [2 * 2 - 5.0] * 3]))


def test_guidance_needs_labels(setup):
    diffusion, data = setup
    with pytest.raises(ValueError, match="model_kwargs"):
        classifier_cond_fn(data.classifier(diffusion), 1.0)(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))


def test_mixture_denoiser_is_the_posterior_mean(setup):
    """E[x_0 | x_t] by Monte Carlo over the joint, binned near a point, against the closed form."""
    diffusion, data = setup
    g = torch.Generator().manual_seed(0)
    x0, _ = data.sample(400_000, generator=g)
    t = torch.full((len(x0),), 60)
    x_t = diffusion.q_sample(x0, t, noise=torch.randn(x0.shape, generator=g))
    probe = torch.tensor([[0.2, 0.1]])
    near = ((x_t - probe) ** 2).sum(1) < 0.03 ** 2
    mc = x0[near].mean(0)
    exact = data.denoise(diffusion, probe, torch.tensor([60]))[0]
    assert near.sum() > 200 and torch.allclose(mc, exact, atol=0.05)
