"""load_openai: OpenAI's improved-/guided-diffusion state dicts onto our modules, checked against an independent
re-implementation of the reference networks.

No released file can be downloaded here, so this file writes its own small "reference" U-Net and noisy classifier
from the equations of Ho et al. 2020 / Nichol & Dhariwal 2021 / Dhariwal & Nichol 2021, with parameters named and
shaped as the reference modules' state dicts are (``in_layers``, ``emb_layers``, ``out_layers``, ``skip_connection``,
``qkv``/``proj_out`` as 1x1 Conv1d, ``op``/``conv`` resampling, ``positional_embedding``/``qkv_proj``/``c_proj``).
They are randomly initialised, saved with torch.save, loaded through load_openai, and both forward passes must agree.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ddpm_lite import get_betas, space_timesteps
from ddpm_lite.checkpoint import CheckpointError
from ddpm_lite.models import UNetModel
from ddpm_lite.pretrained import (
    OPENAI_RELEASES,
    UNSUPPORTED_RELEASES,
    OpenAICheckpoint,
    RescaledTimesteps,
    load_openai,
    openai_release_flags,
)

# --------------------------------------------------------------------------- an independent reference network


def sinusoids(t, dim):
    """Transformer-style timestep features: cos of every frequency, then sin (DDPM sec. 4, the reference layout)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)
    angles = t.double()[:, None] * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], dim=1).float()


class Norm(nn.GroupNorm):
    """GroupNorm with 32 groups, computed in float32."""

    def __init__(self, channels):
        super().__init__(32, channels)

    def forward(self, x):
        return super().forward(x.float()).to(x.dtype)


def resample(x, how):
    if how == "up":
        return F.interpolate(x, scale_factor=2.0, mode="nearest")
    if how == "down":
        return F.avg_pool2d(x, 2)
    return x


class RefRes(nn.Module):
    """h = conv(resample(SiLU(GN(x)))); h = GN(h) (1 + s) + b or GN(h + e); out = skip(resample(x)) + conv(SiLU(h))."""

    def __init__(self, cin, emb, cout, scale_shift, how=None):
        super().__init__()
        self.scale_shift, self.how = scale_shift, how
        self.in_layers = nn.Sequential(Norm(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb, cout * (2 if scale_shift else 1)))
        self.out_layers = nn.Sequential(Norm(cout), nn.SiLU(), nn.Dropout(0.0), nn.Conv2d(cout, cout, 3, padding=1))
        self.skip_connection = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x, emb):
        h = self.in_layers[2](resample(self.in_layers[1](self.in_layers[0](x)), self.how))
        x = resample(x, self.how)
        e = self.emb_layers(emb)[:, :, None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
        else:
            h = self.out_layers[0](h + e)
        for layer in self.out_layers[1:]:
            h = layer(h)
        return self.skip_connection(x) + h


def attend(qkv, heads, legacy):
    """Multi-head attention over the last axis of packed projections (B, 3C, T): legacy = rows grouped by head
    first (head, q/k/v, channel); else by q/k/v first (q/k/v, head, channel). softmax(q.k / sqrt(d)) v."""
    b, width, length = qkv.shape
    d = width // (3 * heads)
    if legacy:
        q, k, v = qkv.reshape(b, heads, 3, d, length).unbind(2)
    else:
        q, k, v = qkv.reshape(b, 3, heads, d, length).unbind(1)
    weights = torch.softmax(torch.einsum("bhdt,bhds->bhts", q, k) / math.sqrt(d), dim=-1)
    return torch.einsum("bhts,bhds->bhdt", weights, v).reshape(b, heads * d, length)


class RefAttention(nn.Module):
    def __init__(self, channels, heads, legacy):
        super().__init__()
        self.heads, self.legacy = heads, legacy
        self.norm = Norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x):
        b, c, *spatial = x.shape
        flat = x.reshape(b, c, -1)
        h = self.proj_out(attend(self.qkv(self.norm(flat)), self.heads, self.legacy))
        return (flat + h).reshape(b, c, *spatial)


class RefDown(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class RefUp(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Seq(nn.ModuleList):
    def forward(self, x, emb):
        for layer in self:
            x = layer(x, emb) if isinstance(layer, RefRes) else layer(x)
        return x


class RefEncoder(nn.Module):
    """Downsampling path and middle block; ``attention_rates`` are downsample rates, as in the reference."""

    def __init__(self, mc, mult, blocks, attention_rates, heads_of, scale_shift, updown, legacy, in_ch=3):
        super().__init__()
        emb = 4 * mc
        self.mc = mc
        self.time_embed = nn.Sequential(nn.Linear(mc, emb), nn.SiLU(), nn.Linear(emb, emb))
        ch = mc * mult[0]
        self.input_blocks = nn.ModuleList([Seq([nn.Conv2d(in_ch, ch, 3, padding=1)])])
        self.chans, rate = [ch], 1
        for level, m in enumerate(mult):
            for _ in range(blocks):
                layers = [RefRes(ch, emb, mc * m, scale_shift)]
                ch = mc * m
                if rate in attention_rates:
                    layers.append(RefAttention(ch, heads_of(ch), legacy))
                self.input_blocks.append(Seq(layers))
                self.chans.append(ch)
            if level < len(mult) - 1:
                self.input_blocks.append(Seq([RefRes(ch, emb, ch, scale_shift, "down") if updown else RefDown(ch)]))
                self.chans.append(ch)
                rate *= 2
        self.middle_block = Seq([RefRes(ch, emb, ch, scale_shift), RefAttention(ch, heads_of(ch), legacy),
                                 RefRes(ch, emb, ch, scale_shift)])
        self.ch, self.rate, self.emb_dim = ch, rate, emb

    def encode(self, x, emb):
        hs = []
        for block in self.input_blocks:
            x = block(x, emb)
            hs.append(x)
        return self.middle_block(x, emb), hs


class RefUNet(RefEncoder):
    def __init__(self, mc, mult, blocks, attention_rates, heads_of, scale_shift, updown, legacy, out_ch,
                 num_classes=None):
        super().__init__(mc, mult, blocks, attention_rates, heads_of, scale_shift, updown, legacy)
        ch, rate, chans = self.ch, self.rate, list(self.chans)
        if num_classes:
            self.label_emb = nn.Embedding(num_classes, self.emb_dim)
        self.output_blocks = nn.ModuleList()
        for level in reversed(range(len(mult))):
            for i in range(blocks + 1):
                layers = [RefRes(ch + chans.pop(), self.emb_dim, mc * mult[level], scale_shift)]
                ch = mc * mult[level]
                if rate in attention_rates:
                    layers.append(RefAttention(ch, heads_of(ch), legacy))
                if level and i == blocks:
                    layers.append(RefRes(ch, self.emb_dim, ch, scale_shift, "up") if updown else RefUp(ch))
                    rate //= 2
                self.output_blocks.append(Seq(layers))
        self.out = nn.Sequential(Norm(ch), nn.SiLU(), nn.Conv2d(ch, out_ch, 3, padding=1))

    def forward(self, x, t, y=None):
        emb = self.time_embed(sinusoids(t, self.mc))
        if y is not None:
            emb = emb + self.label_emb(y)
        h, hs = self.encode(x, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)  # the running features first, then the skip
        return self.out(h)


class RefPool(nn.Module):
    """CLIP-style attention pooling: the mean token is prepended, a (C, HW + 1) position embedding added, q-k-v-major
    attention over all tokens, output projection, token 0 read out."""

    def __init__(self, size, channels, head_channels, out):
        super().__init__()
        self.heads = channels // head_channels
        self.positional_embedding = nn.Parameter(torch.randn(channels, size * size + 1))
        self.qkv_proj = nn.Conv1d(channels, 3 * channels, 1)
        self.c_proj = nn.Conv1d(channels, out, 1)

    def forward(self, x):
        flat = x.flatten(2)
        tokens = torch.cat([flat.mean(dim=2, keepdim=True), flat], dim=2) + self.positional_embedding[None]
        return self.c_proj(attend(self.qkv_proj(tokens), self.heads, legacy=False))[:, :, 0]


class RefClassifier(RefEncoder):
    def __init__(self, size, mc, mult, blocks, attention_rates, head_channels, scale_shift, updown):
        super().__init__(mc, mult, blocks, attention_rates, lambda c: c // head_channels, scale_shift, updown,
                         legacy=True)
        self.out = nn.Sequential(Norm(self.ch), nn.SiLU(),
                                 RefPool(size // self.rate, self.ch, head_channels, 1000))

    def forward(self, x, t):
        h, _ = self.encode(x, self.time_embed(sinusoids(t, self.mc)))
        return self.out(h)


def randomise(module, seed):
    """Every parameter random (none left at zero): weights ~ N(0, 1/fan_in), biases ~ N(0, 0.1^2), GN gains near 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name.endswith("bias"):
                p.copy_(0.1 * noise)
            elif p.ndim == 1:
                p.copy_(1 + 0.1 * noise)
            else:
                p.copy_(noise / math.sqrt(max(1, p[0].numel())))
    return module.eval()


def save(module, path, half_torso=False):
    state = module.state_dict()
    if half_torso:  # use_fp16: the reference keeps the torso in fp16
        state = {k: v.half() if k.startswith(("input_blocks", "middle_block", "output_blocks")) else v
                 for k, v in state.items()}
        module.load_state_dict({k: v.float() for k, v in state.items()})  # the same rounded weights on both sides
    torch.save(state, path)


# --------------------------------------------------------------------------- forward parity


CASES = {
    # name: (codebase, flags, reference-network options)
    "guided_uncond_updown_new_order": ("guided-diffusion", dict(
        num_head_channels=16, resblock_updown=True, use_new_attention_order=True), dict(updown=True, legacy=False)),
    "guided_cond_sigma_conv_resample_legacy": ("guided-diffusion", dict(
        class_cond=True, learn_sigma=True, num_heads=2, resblock_updown=False), dict(updown=False, legacy=True)),
    "guided_updown_legacy_no_scale_shift": ("guided-diffusion", dict(
        num_head_channels=16, resblock_updown=True, use_scale_shift_norm=False, learn_sigma=True),
        dict(updown=True, legacy=True, scale_shift=False)),
    "guided_fp16_torso": ("guided-diffusion", dict(
        num_head_channels=32, resblock_updown=True, use_new_attention_order=True, use_fp16=True, class_cond=True),
        dict(updown=True, legacy=False)),
    "improved_cond_sigma_rescaled_timesteps": ("improved-diffusion", dict(
        class_cond=True, learn_sigma=True, num_heads=4), dict(updown=False, legacy=True)),
}
COMMON = dict(image_size=8, num_channels=32, num_res_blocks=2, channel_mult="1,2", attention_resolutions="4",
              diffusion_steps=40, noise_schedule="cosine")


def reference_unet(flags, updown, legacy, scale_shift=True):
    mc, mult = flags["num_channels"], (1, 2)
    if flags.get("num_head_channels", -1) != -1:
        def heads_of(c):
            return c // flags["num_head_channels"]
    else:
        def heads_of(c):
            return flags.get("num_heads", 4)
    return RefUNet(mc, mult, flags["num_res_blocks"], {8 // 4}, heads_of, scale_shift, updown, legacy,
                   out_ch=6 if flags.get("learn_sigma") else 3, num_classes=1000 if flags.get("class_cond") else None)


@pytest.mark.parametrize("case", list(CASES))
def test_unet_forward_matches_the_reference_layout(case, tmp_path):
    codebase, extra, options = CASES[case]
    flags = {**COMMON, **extra}
    ref = randomise(reference_unet(flags, **options), seed=len(case))
    path = tmp_path / "ema_0.9999_000100.pt"
    save(ref, path, half_torso=flags.get("use_fp16", False))
    model, diffusion, info = load_openai(path, codebase=codebase, **flags)
    assert isinstance(info, OpenAICheckpoint) and info.kind == "diffusion" and info.release is None
    assert not model.training
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 3, 8, 8, generator=g)
    t = torch.tensor([0, 17, 39])
    kwargs = {"y": torch.tensor([5, 999, 0])} if flags.get("class_cond") else {}
    rescale = codebase == "improved-diffusion"  # improved-diffusion's default: the network sees t * 1000 / T
    assert isinstance(model, RescaledTimesteps) == rescale
    with torch.no_grad():
        ours = model(x, t, **kwargs)
        theirs = ref(x, t.float() * (1000 / 40) if rescale else t, **kwargs)
    assert ours.shape == theirs.shape == (3, 6 if flags.get("learn_sigma") else 3, 8, 8)
    assert (ours - theirs).abs().max().item() < 1e-5
    assert info.num_classes == (1000 if flags.get("class_cond") else None) and info.sample_shape == (3, 8, 8)


def test_classifier_forward_matches_the_reference_layout(tmp_path):
    for seed, (updown, scale_shift) in enumerate([(True, True), (False, False)]):
        ref = randomise(RefClassifier(8, 32, (1, 2), 2, {2}, 16, scale_shift, updown), seed=seed)
        path = tmp_path / f"classifier{seed}.pt"
        save(ref, path)
        flags = dict(image_size=8, classifier_width=32, classifier_depth=2, classifier_channel_mult="1,2",
                     classifier_attention_resolutions="4", classifier_num_head_channels=16,
                     classifier_use_scale_shift_norm=scale_shift, classifier_resblock_updown=updown,
                     diffusion_steps=40, learn_sigma=True, noise_schedule="cosine")
        classifier, diffusion, info = load_openai(path, codebase="guided-diffusion", **flags)
        assert info.kind == "classifier" and info.num_classes == 1000 and not info.class_cond
        x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
        t = torch.tensor([0, 3, 20, 39])
        with torch.no_grad():
            diff = (classifier(x, t) - ref(x, t)).abs().max().item()
        assert diff < 1e-5, (updown, scale_shift, diff)
        assert diffusion.var_type == "learned_range" and diffusion.num_timesteps == 40


def test_diffusion_flags_and_respacing(tmp_path):
    ref = randomise(reference_unet({**COMMON, "learn_sigma": False}, updown=False, legacy=True), seed=3)
    path = tmp_path / "model.pt"
    save(ref, path)
    _, d, _ = load_openai(path, codebase="guided-diffusion", **COMMON)
    np.testing.assert_array_equal(d.betas, get_betas("cosine", 40))
    assert (d.mean_type, d.var_type, d.loss_type) == ("eps", "fixed_large", "simple")  # sigma_small=False
    _, d, _ = load_openai(path, codebase="guided-diffusion", **COMMON, sigma_small=True, predict_xstart=True,
                          use_kl=True)
    assert (d.mean_type, d.var_type, d.loss_type) == ("x0", "fixed_small", "rescaled_kl")
    _, d, _ = load_openai(path, codebase="improved-diffusion", **{**COMMON, "channel_mult": "1,2"})
    assert d.loss_type == "rescaled_mse"  # improved-diffusion's default rescale_learned_sigmas=True

    # respaced, with rescaled timesteps: the network sees timestep_map[t] * 1000 / T, as the reference's wrapper
    model, d, info = load_openai(path, codebase="improved-diffusion", timestep_respacing="ddim8", **COMMON)
    kept = sorted(space_timesteps(40, "ddim8"))
    assert d.num_timesteps == 8 and sorted(d.timestep_map.tolist()) == kept
    seen = []
    hook = model.net.register_forward_pre_hook(lambda module, args: seen.append(args[1].clone()))
    x = torch.zeros(2, 3, 8, 8)
    d.p_mean_variance(model, x, torch.tensor([0, 7]))
    hook.remove()
    torch.testing.assert_close(seen[0], torch.tensor([kept[0], kept[7]]).float() * 25.0)
    assert info.flags["rescale_timesteps"] is True and info.flags["timestep_respacing"] == "ddim8"


# --------------------------------------------------------------------------- the released checkpoints' flags


def test_release_flags_build_the_published_model_sizes():
    """Built on the meta device from the README flags: the parameter counts of Dhariwal & Nichol 2021 (296M, 422M,
    554M for ImageNet 64, 128, 256) and of the file name imagenet64_cond_270M."""
    published = {"64x64_diffusion": 296, "128x128_diffusion": 422, "256x256_diffusion": 554,
                 "imagenet64_cond_270M_250K": 270}
    from ddpm_lite.pretrained import _resolve_flags, _unet_config

    for name, millions in published.items():
        _, _, flags = _resolve_flags(f"models/{name}.pt", "auto", None, {})
        with torch.device("meta"):
            net = UNetModel(_unet_config(flags))
        count = sum(p.numel() for p in net.parameters()) / 1e6
        assert count == pytest.approx(millions, rel=0.015), (name, count)
    assert openai_release_flags("64x64_diffusion")["use_new_attention_order"] is True
    assert openai_release_flags("64x64_classifier")["classifier_depth"] == 4
    assert openai_release_flags("imagenet64_cond_270M_250K")["codebase"] == "improved-diffusion"
    assert set(OPENAI_RELEASES).isdisjoint(UNSUPPORTED_RELEASES)


@pytest.mark.parametrize("name, flag", [("512x512_diffusion", "channel_mult"), ("512x512_classifier", "channel_mult"),
                                        ("64_256_upsampler", "large_size"), ("128_512_upsampler", "super-resolution"),
                                        ("upsample_cond_500K", "SuperResModel")])
def test_unsupported_releases_are_refused_naming_the_flag(name, flag, tmp_path):
    with pytest.raises(ValueError, match=flag):
        load_openai(tmp_path / f"{name}.pt")  # refused before the (absent) file is read


@pytest.mark.parametrize("flags, match", [
    (dict(codebase=None), "codebase must be one of"),
    (dict(codebase="guided-diffusion", foo=1), "unknown guided-diffusion flag"),
    (dict(codebase="improved-diffusion", resblock_updown=True), "unknown improved-diffusion flag"),
    (dict(codebase="guided-diffusion", large_size=256), "large_size"),
    (dict(codebase="guided-diffusion", use_ddim=True), "sampling flags"),
    (dict(release="cifar10", codebase="guided-diffusion"), "unknown released checkpoint"),
])
def test_bad_flags_are_one_clear_error(flags, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        load_openai(tmp_path / "x.pt", **flags)


def test_flag_values_our_modules_cannot_express(tmp_path):
    ref = randomise(reference_unet(COMMON, updown=False, legacy=True), seed=4)
    path = tmp_path / "m.pt"
    save(ref, path)
    with pytest.raises(ValueError, match="num_heads_upsample"):
        load_openai(path, codebase="guided-diffusion", **COMMON, num_heads_upsample=2)
    with pytest.raises(ValueError, match="channel_mult"):
        load_openai(path, codebase="guided-diffusion", **{**COMMON, "channel_mult": "0.5,1"})
    with pytest.raises(ValueError, match="multiple of 32"):
        load_openai(path, codebase="guided-diffusion", **{**COMMON, "num_channels": 48})
    classifier = randomise(RefClassifier(8, 32, (1, 2), 1, {2}, 16, True, True), seed=5)
    save(classifier, tmp_path / "c.pt")
    with pytest.raises(ValueError, match="classifier_pool"):
        load_openai(tmp_path / "c.pt", codebase="guided-diffusion", image_size=8, classifier_pool="adaptive")
    with pytest.raises(ValueError, match="only guided-diffusion trains"):
        load_openai(tmp_path / "c.pt", codebase="improved-diffusion", image_size=8)
    state = ref.state_dict()
    state["input_blocks.0.0.weight"] = torch.cat([state["input_blocks.0.0.weight"]] * 2, dim=1)
    torch.save(state, tmp_path / "sr.pt")  # a super-resolution model: 3 more input channels
    with pytest.raises(ValueError, match="super-resolution"):
        load_openai(tmp_path / "sr.pt", codebase="guided-diffusion", **COMMON)


def test_files_that_do_not_fit_the_flags_name_the_tensors_and_the_flag(tmp_path):
    ref = randomise(reference_unet({**COMMON, "class_cond": True}, updown=False, legacy=True), seed=6)
    path = tmp_path / "m.pt"
    save(ref, path)
    with pytest.raises(CheckpointError, match=r"label_emb\.weight.*class_cond=True"):
        load_openai(path, codebase="guided-diffusion", **COMMON)
    with pytest.raises(CheckpointError, match=r"out\.2\.weight has shape.*learn_sigma=False"):
        load_openai(path, codebase="guided-diffusion", **COMMON, class_cond=True, learn_sigma=True)
    with pytest.raises(CheckpointError, match="missing|unexpected"):
        load_openai(path, codebase="guided-diffusion", **{**COMMON, "num_res_blocks": 1}, class_cond=True)


def test_files_that_are_not_state_dicts(tmp_path):
    flags = dict(codebase="guided-diffusion", **COMMON)
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="cannot be read as a PyTorch file"):
        load_openai(tmp_path / "text.pt", **flags)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds list, not an improved-/guided-diffusion state_dict"):
        load_openai(tmp_path / "list.pt", **flags)
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no time_embed.0.weight"):
        load_openai(tmp_path / "other.pt", **flags)
    torch.save({"format": "ddpm_lite", "model": {}}, tmp_path / "ours.pt")
    with pytest.raises(CheckpointError, match="load_model"):
        load_openai(tmp_path / "ours.pt", **flags)

    class Evil:
        def __reduce__(self):
            return (print, ("never printed",))

    torch.save({"time_embed.0.weight": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="blocked by the safe loader"):
        load_openai(tmp_path / "evil.pt", **flags)
    with pytest.raises(CheckpointError, match="no OpenAI checkpoint"):
        load_openai(tmp_path / "missing.pt", **flags)
    state = randomise(reference_unet(COMMON, updown=False, legacy=True), seed=7).state_dict()
    state["out.2.bias"][0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        load_openai(tmp_path / "nan.pt", **flags)


def test_loaded_models_sample_with_classifier_guidance(tmp_path):
    """The loaded pair runs through the package's sampler as notebook 08 would use them (checkpoints/README.md)."""
    from ddpm_lite.guidance import classifier_cond_fn
    from ddpm_lite.sampling import generate

    flags = {**COMMON, "class_cond": True, "learn_sigma": True, "num_heads": 2}
    save(randomise(reference_unet(flags, updown=False, legacy=True), seed=8), tmp_path / "m.pt")
    save(randomise(RefClassifier(8, 32, (1, 2), 1, {2}, 16, True, True), seed=9), tmp_path / "c.pt")
    model, diffusion, info = load_openai(tmp_path / "m.pt", codebase="guided-diffusion", **flags)
    classifier, _, _ = load_openai(tmp_path / "c.pt", codebase="guided-diffusion", image_size=8,
                                   classifier_width=32, classifier_depth=1, classifier_channel_mult="1,2",
                                   classifier_attention_resolutions="4", classifier_num_head_channels=16,
                                   diffusion_steps=40)
    y = torch.tensor([1, 500])
    g = torch.Generator().manual_seed(0)
    plain = generate(model, diffusion, (2, *info.sample_shape), steps=5, y=y, generator=g)
    g = torch.Generator().manual_seed(0)
    guided = generate(model, diffusion, (2, *info.sample_shape), steps=5, y=y, generator=g,
                      cond_fn=classifier_cond_fn(classifier, 5.0))
    assert plain.shape == guided.shape == (2, 3, 8, 8) and torch.isfinite(guided).all()
    assert not torch.allclose(plain, guided)
