"""Tests of ddpm_lite.models: shapes, conditioning, gradients, input checks, configs, attention."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddpm_lite.models import (
    AttentionBlock,
    AttentionPool2d,
    EncoderUNetModel,
    MLPDenoiser,
    UNetConfig,
    UNetModel,
    count_parameters,
    group_count,
    normalization,
    timestep_embedding,
)

SMALL_UNETS = ["digits8", "digits16", "mnist28"]
CLASSIFIERS = ["digits8_classifier", "digits16_classifier"]


def perturb(model, scale=0.05, seed=0):
    """Add noise to every parameter, so that zero-initialised layers stop hiding the rest."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return model


def inputs(cfg, batch=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cfg.in_channels, cfg.image_size, cfg.image_size, generator=gen)
    return x, torch.randint(0, 1000, (batch,), generator=gen)


# ---------------------------------------------------------------- building blocks


@pytest.mark.parametrize("dim", [1, 2, 7, 64, 129])
def test_timestep_embedding_matches_numpy_float64(dim):
    t = torch.tensor([0, 1, 17, 500, 999])
    half = dim // 2
    freqs = np.exp(-math.log(10000) * np.arange(half, dtype=np.float64) / half)
    args = t.numpy().astype(np.float64)[:, None] * freqs[None]
    expected = np.concatenate([np.cos(args), np.sin(args), np.zeros((len(t), dim % 2))], axis=1)
    got = timestep_embedding(t, dim)
    assert got.shape == (5, dim) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, atol=2e-4)


def test_timestep_embedding_max_period_and_fractional_t():
    t = torch.tensor([2.5])
    got = timestep_embedding(t, 4, max_period=100)
    freqs = np.array([1.0, 0.1])
    np.testing.assert_allclose(got[0].numpy(), np.r_[np.cos(2.5 * freqs), np.sin(2.5 * freqs)], atol=1e-6)


@pytest.mark.parametrize("channels, groups", [(32, 32), (64, 32), (192, 32), (48, 24), (16, 16), (24, 24), (3, 3)])
def test_group_count_uses_32_or_the_largest_divisor(channels, groups):
    assert group_count(channels) == groups
    assert normalization(channels).num_groups == groups


def test_group_norm_computes_in_float32():
    norm = normalization(32)
    x = torch.randn(2, 32, 4, 4)
    out = norm(x.bfloat16())
    assert out.dtype == torch.bfloat16
    expected = F.group_norm(x.bfloat16().float(), 32, norm.weight, norm.bias, norm.eps)
    torch.testing.assert_close(out, expected.bfloat16())


def test_attention_block_equals_naive_softmax_attention():
    torch.manual_seed(0)
    c, heads = 64, 4
    block = perturb(AttentionBlock(c, heads))
    x = torch.randn(2, c, 4, 4)
    tokens = block.norm(x).flatten(2).transpose(1, 2)  # (B, L, C)
    q, k, v = block.qkv(tokens).chunk(3, dim=-1)
    d = c // heads
    outs = []
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        w = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(d), dim=-1)
        outs.append(w @ v[..., sl])
    naive = block.proj_out(torch.cat(outs, dim=-1)).transpose(1, 2).reshape(x.shape)
    torch.testing.assert_close(block(x), x + naive, atol=1e-5, rtol=1e-5)


def test_attention_pool_equals_full_attention_read_at_the_mean_token():
    torch.manual_seed(0)
    pool = AttentionPool2d(size=2, channels=32, num_heads=2, out_dim=5)
    x = torch.randn(3, 32, 2, 2)
    tokens = x.flatten(2).transpose(1, 2)
    tokens = torch.cat([tokens.mean(1, keepdim=True), tokens], 1) + pool.pos_emb
    q, k, v = pool.qkv(tokens).chunk(3, dim=-1)
    split = lambda z: z.unflatten(-1, (2, 16)).transpose(1, 2)  # noqa: E731
    full = F.softmax(split(q) @ split(k).transpose(-1, -2) / 4.0, -1) @ split(v)  # all queries
    expected = pool.proj(full.transpose(1, 2).flatten(2)[:, 0])
    torch.testing.assert_close(pool(x), expected, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- MLP


@pytest.mark.parametrize("out_mult", [1, 2])
def test_mlp_denoiser_shapes(out_mult):
    model = MLPDenoiser(data_dim=2, hidden=32, num_layers=2, time_embed_dim=16, out_mult=out_mult)
    out = model(torch.randn(5, 2), torch.randint(0, 1000, (5,)))
    assert out.shape == (5, 2 * out_mult)
    assert model.learn_sigma == (out_mult == 2)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_mlp_denoiser_bad_inputs():
    model = MLPDenoiser()
    with pytest.raises(ValueError, match=r"x must have shape \(B, 2\)"):
        model(torch.randn(5, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"t must be a tensor of shape \(5,\)"):
        model(torch.randn(5, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="out_mult"):
        MLPDenoiser(out_mult=3)


# ---------------------------------------------------------------- U-Net


@pytest.mark.parametrize("name", SMALL_UNETS)
@pytest.mark.parametrize("learn_sigma", [False, True])
def test_unet_output_shape(name, learn_sigma):
    cfg = UNetConfig.preset(name, learn_sigma=learn_sigma)
    model = UNetModel(cfg)
    x, t = inputs(cfg, batch=2)
    out = model(x, t)
    assert out.shape == (2, cfg.in_channels * (2 if learn_sigma else 1), cfg.image_size, cfg.image_size)
    assert model.learn_sigma == learn_sigma
    assert torch.all(out == 0)  # the output conv starts at zero


def test_unet_without_adm_changes_builds_and_runs():
    """scale-shift norm off, strided-conv resampling: the Improved DDPM variant."""
    cfg = UNetConfig.preset("digits16", use_scale_shift_norm=False, resblock_updown=False, num_heads=2,
                            num_head_channels=-1)
    model = perturb(UNetModel(cfg))
    x, t = inputs(cfg)
    assert model(x, t).shape == x.shape


def test_unet_gradient_reaches_every_parameter():
    cfg = UNetConfig.preset("digits8", num_classes=10, learn_sigma=True, dropout=0.0)
    model = perturb(UNetModel(cfg))
    x, t = inputs(cfg, batch=4)
    y = torch.tensor([0, 3, 9, 10])
    model(x, t, y).square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_class_conditioning_and_null_label():
    cfg = UNetConfig.preset("digits8", num_classes=10)
    model = perturb(UNetModel(cfg)).eval()
    assert model.label_emb.num_embeddings == 11
    x, t = inputs(cfg, batch=2)
    out_a = model(x, t, torch.tensor([1, 1]))
    out_b = model(x, t, torch.tensor([2, 2]))
    assert not torch.allclose(out_a, out_b)
    torch.testing.assert_close(model(x, t), model(x, t, torch.tensor([10, 10])))


def test_unconditional_model_rejects_labels():
    cfg = UNetConfig.preset("digits8")
    model = UNetModel(cfg)
    x, t = inputs(cfg)
    with pytest.raises(ValueError, match="unconditional"):
        model(x, t, torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("y, match", [
    (torch.zeros(2, dtype=torch.long), r"shape \(3,\)"),
    (torch.zeros(3), "integer tensor"),
    (torch.tensor([0, 11, 2]), r"labels must be in \[0, 10\]"),
    (torch.tensor([-1, 0, 2]), r"labels must be in \[0, 10\]"),
])
def test_bad_labels(y, match):
    cfg = UNetConfig.preset("digits8", num_classes=10)
    model = UNetModel(cfg)
    x, t = inputs(cfg)
    with pytest.raises(ValueError, match=match):
        model(x, t, y)


@pytest.mark.parametrize("shape", [(3, 8, 8), (3, 2, 8, 8), (3, 1, 16, 16), (3, 1, 8, 4)])
def test_bad_image_shape(shape):
    model = UNetModel(UNetConfig.preset("digits8"))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, 8, 8\)"):
        model(torch.randn(shape), torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("t", [torch.zeros(2, dtype=torch.long), torch.zeros(3, 1, dtype=torch.long), 5])
def test_bad_timesteps(t):
    model = UNetModel(UNetConfig.preset("digits8"))
    with pytest.raises(ValueError, match=r"t must be a tensor of shape \(3,\)"):
        model(torch.randn(3, 1, 8, 8), t)


# ---------------------------------------------------------------- classifier


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifier_logits(name):
    cfg = UNetConfig.preset(name)
    clf = EncoderUNetModel(cfg)
    x, t = inputs(cfg, batch=4)
    logits = clf(x, t)
    assert logits.shape == (4, cfg.num_classes)
    logits.logsumexp(-1).sum().backward()
    assert all(p.grad is not None for p in clf.parameters())


def test_classifier_is_time_conditioned_and_needs_classes():
    cfg = UNetConfig.preset("digits8_classifier")
    clf = perturb(EncoderUNetModel(cfg)).eval()
    x, _ = inputs(cfg, batch=2)
    assert not torch.allclose(clf(x, torch.tensor([0, 0])), clf(x, torch.tensor([900, 900])))
    with pytest.raises(ValueError, match="num_classes"):
        EncoderUNetModel(UNetConfig.preset("digits8"))


# ---------------------------------------------------------------- config


def test_config_round_trip_through_json():
    cfg = UNetConfig.preset("imagenet64")
    d = json.loads(json.dumps(cfg.to_dict()))
    assert isinstance(d["channel_mult"], list)
    assert UNetConfig.from_dict(d) == cfg


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown UNetConfig fields"):
        UNetConfig.from_dict({**UNetConfig().to_dict(), "use_fp16": True})


def test_preset_overrides_and_unknown_preset():
    cfg = UNetConfig.preset("digits8", num_classes=10, learn_sigma=True)
    assert cfg.num_classes == 10 and cfg.model_out_channels == 2
    with pytest.raises(ValueError, match="unknown preset 'digits9'; known presets: digits8, digits16"):
        UNetConfig.preset("digits9")
    assert set(SMALL_UNETS + CLASSIFIERS + ["cifar10", "imagenet64"]) <= set(UNetConfig.preset_names())


def test_image_size_the_downsamplings_cannot_divide():
    with pytest.raises(ValueError, match=r"image_size=28 cannot be halved 3 times.*multiple of 8 such as "
                                         r"24 or 32.*at most 3 levels"):
        UNetConfig(image_size=28, channel_mult=(1, 2, 2, 2), attention_resolutions=())
    assert UNetConfig.preset("mnist28").resolutions == (28, 14, 7)


@pytest.mark.parametrize("changes, match", [
    (dict(attention_resolutions=(5,)), r"attention_resolutions \[5\] are not feature-map sizes"),
    (dict(num_head_channels=48), "num_head_channels=48"),
    (dict(num_heads=3, num_head_channels=-1), "num_heads=3"),
    (dict(dropout=1.0), "dropout"),
    (dict(channel_mult=()), "channel_mult"),
    (dict(num_classes=0), "num_classes"),
])
def test_invalid_configs(changes, match):
    with pytest.raises(ValueError, match=match):
        UNetConfig.preset("digits16", **changes)


@pytest.mark.parametrize("name, millions", [("cifar10", 52.5), ("imagenet64", 295.9)])
def test_paper_sized_presets_build(name, millions):
    with torch.device("meta"):  # no memory, no initialisation: only the parameter count
        model = UNetModel(UNetConfig.preset(name))
    assert count_parameters(model) / 1e6 == pytest.approx(millions, abs=0.1)
