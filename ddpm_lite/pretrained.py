"""The small digits models shipped with the package, so notebooks show good samples in seconds.

Each was trained by the command line from a preset (``make checkpoints`` reproduces them; the exact commands
and seeds are in ``ddpm_lite/checkpoints/README.md``):

- ``digits``: unconditional U-Net, cosine schedule, learned variance (hybrid loss).
- ``digits_cond``: class-conditional U-Net, trained with 10% of labels dropped (classifier-free guidance).
- ``digits_classifier``: the noisy-image classifier p(y | x_t) for classifier guidance.

:func:`load_openai` loads the checkpoints released with openai/improved-diffusion and openai/guided-diffusion onto
the same modules (see its docstring for the supported files and their flags).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .checkpoint import CheckpointError, CheckpointMismatchError, CheckpointNotFoundError, load_model
from .gaussian_diffusion import GaussianDiffusion
from .models import EncoderUNetModel, UNetConfig, UNetModel, group_count
from .respace import respace, space_timesteps
from .schedules import get_betas

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


# =========================================================================== OpenAI's released checkpoints

_IMPROVED, _GUIDED = "improved-diffusion", "guided-diffusion"
CODEBASES = (_IMPROVED, _GUIDED)

# Each codebase's script_util defaults (model_and_diffusion_defaults, classifier_defaults); flags missing from a
# release's command line take these values.
_DEFAULTS = {
    _IMPROVED: dict(image_size=64, num_channels=128, num_res_blocks=2, num_heads=4, num_heads_upsample=-1,
                    attention_resolutions="16,8", dropout=0.0, learn_sigma=False, sigma_small=False, class_cond=False,
                    diffusion_steps=1000, noise_schedule="linear", timestep_respacing="", use_kl=False,
                    predict_xstart=False, rescale_timesteps=True, rescale_learned_sigmas=True, use_checkpoint=False,
                    use_scale_shift_norm=True),
    _GUIDED: dict(image_size=64, num_channels=128, num_res_blocks=2, num_heads=4, num_heads_upsample=-1,
                  num_head_channels=-1, attention_resolutions="16,8", channel_mult="", dropout=0.0, class_cond=False,
                  use_checkpoint=False, use_scale_shift_norm=True, resblock_updown=False, use_fp16=False,
                  use_new_attention_order=False, learn_sigma=False, diffusion_steps=1000, noise_schedule="linear",
                  timestep_respacing="", use_kl=False, predict_xstart=False, rescale_timesteps=False,
                  rescale_learned_sigmas=False, sigma_small=False,
                  classifier_use_fp16=False, classifier_width=128, classifier_depth=2,
                  classifier_attention_resolutions="32,16,8", classifier_use_scale_shift_norm=True,
                  classifier_resblock_updown=True, classifier_pool="attention"),
}
# ddpm_lite's own additions, for architectures the release scripts fix (tiny test models use them)
_EXTENSIONS = {"channel_mult": "", "classifier_channel_mult": "", "classifier_num_head_channels": 64}
_SAMPLING_FLAGS = ("batch_size", "num_samples", "use_ddim", "clip_denoised", "classifier_scale", "model_path",
                   "classifier_path", "base_samples")

_IMAGENET64_COSINE = dict(image_size=64, learn_sigma=True, diffusion_steps=4000, noise_schedule="cosine")
_ADM_256 = dict(attention_resolutions="32,16,8", diffusion_steps=1000, image_size=256, learn_sigma=True,
                noise_schedule="linear", num_channels=256, num_head_channels=64, num_res_blocks=2,
                resblock_updown=True, use_fp16=True, use_scale_shift_norm=True)
_LSUN_IMPROVED = dict(image_size=256, num_channels=128, num_res_blocks=2, num_heads=1, learn_sigma=True,
                      use_scale_shift_norm=False, attention_resolutions="16", diffusion_steps=1000,
                      noise_schedule="linear", rescale_learned_sigmas=False, rescale_timesteps=False)
_DIFFUSION_64 = dict(attention_resolutions="32,16,8", class_cond=True, diffusion_steps=1000, dropout=0.1,
                     image_size=64, learn_sigma=True, noise_schedule="cosine", num_channels=192, num_head_channels=64,
                     num_res_blocks=3, resblock_updown=True, use_new_attention_order=True, use_fp16=True,
                     use_scale_shift_norm=True)
_DIFFUSION_128 = dict(attention_resolutions="32,16,8", class_cond=True, diffusion_steps=1000, image_size=128,
                      learn_sigma=True, noise_schedule="linear", num_channels=256, num_heads=4, num_res_blocks=2,
                      resblock_updown=True, use_fp16=True, use_scale_shift_norm=True)

#: The released checkpoints this loader supports (file name without .pt -> codebase and the flags of the READMEs).
OPENAI_RELEASES: dict[str, dict] = {
    # openai/improved-diffusion, README "Models and Hyperparameters" (march-2021)
    "imagenet64_uncond_100M_1500K": dict(codebase=_IMPROVED, num_channels=128, num_res_blocks=3, **_IMAGENET64_COSINE),
    "imagenet64_uncond_vlb_100M_1500K": dict(codebase=_IMPROVED, num_channels=128, num_res_blocks=3, use_kl=True,
                                             **_IMAGENET64_COSINE),
    "cifar10_uncond_50M_500K": dict(codebase=_IMPROVED, image_size=32, num_channels=128, num_res_blocks=3,
                                    learn_sigma=True, dropout=0.3, diffusion_steps=4000, noise_schedule="cosine"),
    "cifar10_uncond_vlb_50M_500K": dict(codebase=_IMPROVED, image_size=32, num_channels=128, num_res_blocks=3,
                                        learn_sigma=True, dropout=0.3, diffusion_steps=4000, noise_schedule="cosine",
                                        use_kl=True),
    "imagenet64_cond_270M_250K": dict(codebase=_IMPROVED, num_channels=192, num_res_blocks=3, class_cond=True,
                                      rescale_learned_sigmas=False, rescale_timesteps=False, **_IMAGENET64_COSINE),
    "lsun_uncond_100M_1200K_bs128": dict(codebase=_IMPROVED, **_LSUN_IMPROVED),
    "lsun_uncond_100M_2400K_bs64": dict(codebase=_IMPROVED, **_LSUN_IMPROVED),
    # openai/guided-diffusion, README "Download pre-trained models" (jul-2021)
    "64x64_diffusion": dict(codebase=_GUIDED, **_DIFFUSION_64),
    "128x128_diffusion": dict(codebase=_GUIDED, **_DIFFUSION_128),
    "256x256_diffusion": dict(codebase=_GUIDED, class_cond=True, **_ADM_256),
    "256x256_diffusion_uncond": dict(codebase=_GUIDED, class_cond=False, **_ADM_256),
    "lsun_bedroom": dict(codebase=_GUIDED, class_cond=False, dropout=0.1, **_ADM_256),
    "lsun_cat": dict(codebase=_GUIDED, class_cond=False, dropout=0.1, **_ADM_256),
    "lsun_horse": dict(codebase=_GUIDED, class_cond=False, dropout=0.1, **_ADM_256),
    "lsun_horse_nodropout": dict(codebase=_GUIDED, class_cond=False, dropout=0.0, **_ADM_256),
    # the noisy classifiers, with the diffusion flags of the model they guide
    "64x64_classifier": dict(codebase=_GUIDED, classifier_depth=4, **_DIFFUSION_64),
    "128x128_classifier": dict(codebase=_GUIDED, classifier_use_fp16=True, **_DIFFUSION_128),
    "256x256_classifier": dict(codebase=_GUIDED, class_cond=True, **_ADM_256),
}

_HALF_WIDTH = ("channel_mult (0.5, 1, 1, 2, 2, 4, 4) of image_size 512: a first level of half model_channels, which "
               "UNetConfig (integer multiples of model_channels) cannot express")
_SUPER_RES = ("a super-resolution model (SuperResModel, flags large_size/small_size: the upsampled low-resolution "
              "image enters as 3 more input channels), which ddpm_lite's UNetModel does not implement")
#: Released checkpoints it refuses, and why.
UNSUPPORTED_RELEASES: dict[str, str] = {
    "512x512_diffusion": _HALF_WIDTH,
    "512x512_classifier": _HALF_WIDTH,
    "64_256_upsampler": _SUPER_RES,
    "128_512_upsampler": _SUPER_RES,
    "upsample_cond_500K": _SUPER_RES,
}


class RescaledTimesteps(nn.Module):
    """``model(x, t, **kw)`` calls ``net(x, t * 1000 / num_timesteps, **kw)`` with float timesteps: what a network
    trained with ``rescale_timesteps=True`` (improved-diffusion's default) expects. The samplers pass the original
    chain's integer t (a respaced diffusion maps its steps back first), so this wrapper goes innermost, as in the
    reference's ``_WrappedModel``."""

    def __init__(self, net: nn.Module, num_timesteps: int):
        super().__init__()
        self.net = net
        self.num_timesteps = int(num_timesteps)

    def forward(self, x, t, **kwargs):
        return self.net(x, t.float() * (1000.0 / self.num_timesteps), **kwargs)

    @property
    def config(self):
        return self.net.config


@dataclass(frozen=True)
class OpenAICheckpoint:
    """What :func:`load_openai` loaded: ``kind`` ("diffusion" or "classifier"), the ``codebase``, the ``release``
    name (None for a file given by flags only), every flag with the codebase's defaults filled in, and the
    :class:`~ddpm_lite.models.UNetConfig` of the network built."""

    kind: str
    codebase: str
    release: str | None
    flags: dict
    config: UNetConfig

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def num_classes(self) -> int | None:
        """Classes of a class-conditional model (pass ``y``), logits of a classifier; None if unconditional."""
        return self.config.num_classes

    @property
    def class_cond(self) -> bool:
        return self.kind == "diffusion" and self.config.num_classes is not None

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return (self.config.in_channels, self.config.image_size, self.config.image_size)


def openai_release_flags(release: str) -> dict:
    """The flags of a released checkpoint (see :data:`OPENAI_RELEASES`), codebase included."""
    if release in UNSUPPORTED_RELEASES:
        raise ValueError(f"the released checkpoint {release!r} is not supported: it is {UNSUPPORTED_RELEASES[release]}")
    if release not in OPENAI_RELEASES:
        raise ValueError(f"unknown released checkpoint {release!r}; supported: {', '.join(OPENAI_RELEASES)} "
                         f"(or pass release=None and the flags)")
    return dict(OPENAI_RELEASES[release])


def load_openai(path, release: str | None = "auto", codebase: str | None = None, device=None, **flags):
    """(model, diffusion, info) from a released improved-diffusion or guided-diffusion checkpoint.

    The file is a bare ``state_dict`` of the reference ``UNetModel`` (or of guided-diffusion's noisy classifier
    ``EncoderUNetModel`` with ``pool="attention"``), read with ``torch.load(weights_only=True)``. Its tensors are
    renamed onto :class:`~ddpm_lite.models.UNetModel` / :class:`~ddpm_lite.models.EncoderUNetModel` (ResBlock
    ``in_layers.0/.2`` -> ``in_norm``/``in_conv``, ``emb_layers.1`` -> ``emb_proj``, ``out_layers.0/.3`` ->
    ``out_norm``/``out_conv``, ``skip_connection`` -> ``skip``; ``Downsample.op`` and ``Upsample.conv`` onto our
    resampling convolutions; 1x1 ``Conv1d`` attention projections onto ``Linear``; the classifier's
    ``positional_embedding``/``qkv_proj``/``c_proj`` onto ``pos_emb``/``qkv``/``proj``), with the packed q, k, v
    rows permuted from the legacy head-major order (improved-diffusion, guided-diffusion's ``QKVAttentionLegacy``,
    i.e. ``use_new_attention_order=False``, and its classifiers' attention blocks) to our q-k-v-major order (which
    is ``QKVAttention``'s, ``use_new_attention_order=True``, and every ``AttentionPool2d``'s). A class-conditional
    model's label embedding gains a zero row for our null label (the released models were not trained with one:
    always pass ``y``). fp16 tensors (``use_fp16``) are loaded as float32; run under ``torch.autocast`` for speed.

    ``release="auto"`` takes the flags of the release named like the file (``64x64_diffusion.pt``, ...), as in the
    table below; ``release=None`` (or a file of another name) needs ``codebase`` ("improved-diffusion" or
    "guided-diffusion": their defaults differ, notably ``rescale_timesteps``) and the flags of the training command
    line, e.g. ``load_openai("ema_0.9999_200000.pt", codebase="improved-diffusion", image_size=32,
    num_channels=128, num_res_blocks=3, learn_sigma=True, diffusion_steps=4000, noise_schedule="cosine")``. Keyword
    flags override the release's (``timestep_respacing="250"``, ``"ddim25"``). ``channel_mult`` (an improved-diffusion
    file too), ``classifier_channel_mult`` and ``classifier_num_head_channels`` are ddpm_lite's additions for
    architectures the release scripts fix.

    The diffusion is built as the reference's ``create_gaussian_diffusion``: ``get_betas(noise_schedule,
    diffusion_steps)``; mean ``eps`` (``x0`` with ``predict_xstart``); variance ``learned_range`` with
    ``learn_sigma``, else ``fixed_large`` (``fixed_small`` with ``sigma_small``); loss ``rescaled_kl`` with
    ``use_kl``, ``rescaled_mse`` with ``rescale_learned_sigmas``, else ``simple``; respaced by
    ``timestep_respacing`` when given (then pass ``steps=None`` to :func:`~ddpm_lite.sampling.generate`). With
    ``rescale_timesteps`` the model is wrapped in :class:`RescaledTimesteps`. ``info`` is an
    :class:`OpenAICheckpoint` (``info.num_classes``, ``info.sample_shape``, ``info.flags``).

    Supported releases (flags from the READMEs; codebase default for the rest)::

        file (.pt)                          codebase   model                                        diffusion
        imagenet64_uncond_100M_1500K        improved   64px, 128 ch, 3 blocks, learn_sigma          4000 cosine
        imagenet64_uncond_vlb_100M_1500K    improved   the same                                     4000 cosine, use_kl
        cifar10_uncond_50M_500K             improved   32px, 128 ch, 3 blocks, learn_sigma          4000 cosine
        cifar10_uncond_vlb_50M_500K         improved   the same                                     4000 cosine, use_kl
        imagenet64_cond_270M_250K           improved   64px, 192 ch, 3 blocks, class_cond           4000 cosine*
        lsun_uncond_100M_1200K_bs128        improved   256px, 128 ch, 1 head, attn 16, no scale-shift 1000 linear*
        lsun_uncond_100M_2400K_bs64         improved   the same                                     1000 linear*
        64x64_diffusion                     guided     64px, 192 ch, 3 blocks, 64 ch/head, new order 1000 cosine
        128x128_diffusion                   guided     128px, 256 ch, 2 blocks, 4 heads, legacy     1000 linear
        256x256_diffusion                   guided     256px, 256 ch, 2 blocks, 64 ch/head, class    1000 linear
        256x256_diffusion_uncond            guided     the same, unconditional                      1000 linear
        lsun_bedroom, lsun_cat, lsun_horse, lsun_horse_nodropout   guided   as 256x256_diffusion_uncond
        64x64_classifier                    guided     classifier, 128 ch, depth 4, attention pool  as 64x64_diffusion
        128x128_classifier                  guided     classifier, 128 ch, depth 2                  as 128x128_diff.
        256x256_classifier                  guided     classifier, 128 ch, depth 2                  as 256x256_diff.

    (* rescale_timesteps=False; the other improved-diffusion models see t * 1000 / 4000.) Refused, with the reason:
    ``512x512_diffusion``/``512x512_classifier`` (channel_mult starts at 0.5), the upsamplers ``64_256_upsampler``,
    ``128_512_upsampler``, ``upsample_cond_500K`` (super-resolution models), and any flag value our modules cannot
    express (``classifier_pool`` other than "attention", ``num_heads_upsample`` unlike ``num_heads``, widths that
    are not multiples of 32, the reference's GroupNorm groups): a ValueError naming the flag.
    """
    resolved_release, codebase, flags = _resolve_flags(path, release, codebase, flags)
    state = _read_openai_state_dict(path)
    kind = "classifier" if not any(k.startswith("output_blocks.") for k in state) else "diffusion"
    if kind == "classifier" and codebase == _IMPROVED:
        raise ValueError(f"{path} has no output_blocks: a noisy classifier, which only guided-diffusion trains; "
                         "pass codebase='guided-diffusion' and its classifier_ flags")
    if kind == "diffusion" and state["input_blocks.0.0.weight"].shape[1] == 6:
        raise ValueError(f"{path} takes 6 input channels: {_SUPER_RES}")
    if kind == "classifier" and "out.2.positional_embedding" not in state:
        raise ValueError(f"{path} is a noisy classifier without attention pooling (no out.2.positional_embedding): "
                         "only classifier_pool='attention' is supported")
    config = _classifier_config(flags) if kind == "classifier" else _unet_config(flags)
    legacy = kind == "classifier" or not flags.get("use_new_attention_order", False)
    net = EncoderUNetModel(config) if kind == "classifier" else UNetModel(config)
    mapped = _map_state_dict(net, state, legacy, path, flags)
    net.load_state_dict(mapped)
    net.eval()
    diffusion = _openai_diffusion(flags)
    model = RescaledTimesteps(net, flags["diffusion_steps"]).eval() if flags["rescale_timesteps"] else net
    if device is not None:
        model = model.to(device)
    return model, diffusion, OpenAICheckpoint(kind, codebase, resolved_release, flags, config)


def _resolve_flags(path, release, codebase, flags):
    if release == "auto":
        stem = Path(path).stem
        release = stem if stem in OPENAI_RELEASES or stem in UNSUPPORTED_RELEASES else None
    given = dict(flags)
    if release is not None:
        base = openai_release_flags(release)
        release_codebase = base.pop("codebase")
        if codebase is not None and codebase != release_codebase:
            raise ValueError(f"{release} is a {release_codebase} checkpoint, not {codebase}")
        codebase, given = release_codebase, {**base, **given}
    if codebase not in CODEBASES:
        raise ValueError(f"codebase must be one of {list(CODEBASES)} (their flag defaults differ, e.g. "
                         f"rescale_timesteps), got {codebase!r}; or name a released checkpoint with release=")
    for flag in ("large_size", "small_size"):
        if flag in given:
            raise ValueError(f"flag {flag}: {_SUPER_RES}")
    sampling = sorted(set(given) & set(_SAMPLING_FLAGS))
    if sampling:
        raise ValueError(f"{', '.join(sampling)}: sampling flags, not flags of the model or diffusion; drop them "
                         f"(sample with ddpm_lite.sampling.generate)")
    known = {**_DEFAULTS[codebase], **_EXTENSIONS}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ValueError(f"unknown {codebase} flag(s) {unknown}; accepted: {', '.join(sorted(known))}")
    resolved = {**known, **given}
    if codebase == _IMPROVED:  # flags that do not exist there
        resolved.update(num_head_channels=-1, resblock_updown=False, use_new_attention_order=False, use_fp16=False)
    return release, codebase, resolved


def _read_openai_state_dict(path) -> dict[str, torch.Tensor]:
    from .checkpoint import _blocked_global, _short

    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"no OpenAI checkpoint at {path}" + (" (a folder)" if path.is_dir() else ""))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a damaged or foreign file, or one the safe loader refuses
        blocked = _blocked_global(str(err))
        if blocked is not None:
            raise CheckpointError(f"{path} is blocked by the safe loader (weights_only=True): it holds Python objects "
                                  f"that are not tensors or plain containers{blocked}; an OpenAI checkpoint is a "
                                  f"bare state_dict of tensors") from None
        raise CheckpointError(f"{path} cannot be read as a PyTorch file ({_short(err)}): not an OpenAI "
                              f"improved-/guided-diffusion checkpoint") from None
    what = "not an improved-/guided-diffusion state_dict (a dict of tensors named like time_embed.0.weight, " \
           "input_blocks.0.0.weight)"
    if isinstance(state, dict) and "format" in state and "model" in state:
        raise CheckpointError(f"{path} is a ddpm_lite checkpoint, {what}: load it with ddpm_lite.checkpoint.load_model")
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        got = type(state).__name__ if not isinstance(state, dict) else "a dict of other things"
        raise CheckpointError(f"{path} holds {got}, {what}")
    if "time_embed.0.weight" not in state or "input_blocks.0.0.weight" not in state:
        raise CheckpointError(f"{path} has no time_embed.0.weight or input_blocks.0.0.weight: {what}")
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path} holds NaN or infinite weights in {name}: a damaged file")
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def _channel_mult(text, image_size: int, table: dict[int, tuple], flag: str) -> tuple[int, ...]:
    if text in ("", None):
        if image_size == 512:
            raise ValueError(f"image_size=512: {_HALF_WIDTH}")
        if image_size not in table:
            raise ValueError(f"image_size={image_size} has no default channel_mult in the reference "
                             f"({sorted(table)}); pass {flag}='1,2,2,2' or the like")
        return table[image_size]
    parts = [p.strip() for p in str(text).split(",")] if isinstance(text, str) else list(text)
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"{flag}={text!r} must be comma-separated numbers like '1,2,2,2'") from None
    if not values or any(v != int(v) or v < 1 for v in values):
        raise ValueError(f"{flag}={text!r}: UNetConfig takes positive integer multipliers of model_channels")
    return tuple(int(v) for v in values)


_UNET_MULT = {32: (1, 2, 2, 2), 64: (1, 2, 3, 4), 128: (1, 1, 2, 3, 4), 256: (1, 1, 2, 2, 4, 4)}
_CLASSIFIER_MULT = {64: (1, 2, 3, 4), 128: (1, 1, 2, 3, 4), 256: (1, 1, 2, 2, 4, 4)}


def _attention_sizes(text, image_size: int, levels: int, flag: str) -> tuple[int, ...]:
    """The reference turns each resolution r into the downsample rate image_size // r and attends at the level of
    that rate (if any); our UNetConfig lists the feature-map sizes of those levels."""
    try:
        rates = [image_size // int(r) for r in str(text).split(",") if r.strip()]
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{flag}={text!r} must be comma-separated resolutions like '32,16,8'") from None
    return tuple(sorted({image_size >> level for level in range(levels) if 2 ** level in rates}, reverse=True))


def _check_widths(config: UNetConfig) -> None:
    for mult in config.channel_mult:
        width = config.model_channels * mult
        if width % 32:
            raise ValueError(f"num_channels * channel_mult = {width} is not a multiple of 32: the reference normalises "
                             f"with 32 groups, ours would use {group_count(width)}")


def _unet_config(flags: dict) -> UNetConfig:
    size = int(flags["image_size"])
    upsample_heads = int(flags["num_heads_upsample"])
    if upsample_heads not in (-1, int(flags["num_heads"])) and int(flags.get("num_head_channels", -1)) == -1:
        raise ValueError(f"num_heads_upsample={upsample_heads} differs from num_heads={flags['num_heads']}: our "
                         "U-Net uses one head count for every attention layer")
    mult = _channel_mult(flags["channel_mult"], size, _UNET_MULT, "channel_mult")
    config = UNetConfig(
        image_size=size, in_channels=3, model_channels=int(flags["num_channels"]), out_channels=3,
        num_res_blocks=int(flags["num_res_blocks"]), channel_mult=mult,
        attention_resolutions=_attention_sizes(flags["attention_resolutions"], size, len(mult),
                                               "attention_resolutions"),
        dropout=float(flags["dropout"]), num_classes=1000 if flags["class_cond"] else None,
        num_heads=int(flags["num_heads"]), num_head_channels=int(flags.get("num_head_channels", -1)),
        use_scale_shift_norm=bool(flags["use_scale_shift_norm"]), resblock_updown=bool(flags["resblock_updown"]),
        learn_sigma=bool(flags["learn_sigma"]))
    _check_widths(config)
    return config


def _classifier_config(flags: dict) -> UNetConfig:
    if flags.get("classifier_pool", "attention") != "attention":
        raise ValueError(f"classifier_pool={flags['classifier_pool']!r}: only 'attention' (the released "
                         "classifiers' pooling, AttentionPool2d) is supported")
    size = int(flags["image_size"])
    mult = _channel_mult(flags["classifier_channel_mult"], size, _CLASSIFIER_MULT, "classifier_channel_mult")
    config = UNetConfig(
        image_size=size, in_channels=3, model_channels=int(flags["classifier_width"]),
        num_res_blocks=int(flags["classifier_depth"]), channel_mult=mult,
        attention_resolutions=_attention_sizes(flags["classifier_attention_resolutions"], size, len(mult),
                                               "classifier_attention_resolutions"),
        num_classes=1000, num_head_channels=int(flags["classifier_num_head_channels"]),
        use_scale_shift_norm=bool(flags["classifier_use_scale_shift_norm"]),
        resblock_updown=bool(flags["classifier_resblock_updown"]))
    _check_widths(config)
    return config


def _openai_diffusion(flags: dict) -> GaussianDiffusion:
    steps = int(flags["diffusion_steps"])
    if flags["use_kl"]:
        loss = "rescaled_kl"
    elif flags["rescale_learned_sigmas"]:
        loss = "rescaled_mse"
    else:
        loss = "simple"
    var = "learned_range" if flags["learn_sigma"] else ("fixed_small" if flags["sigma_small"] else "fixed_large")
    base = GaussianDiffusion(get_betas(flags["noise_schedule"], steps), "x0" if flags["predict_xstart"] else "eps",
                             var, loss)
    spec = flags["timestep_respacing"]
    if spec in ("", None):
        return base
    return respace(base, space_timesteps(steps, spec))


_RESBLOCK_NAMES = {"in_norm": "in_layers.0", "in_conv": "in_layers.2", "emb_proj": "emb_layers.1",
                   "out_norm": "out_layers.0", "out_conv": "out_layers.3", "skip": "skip_connection"}


def _reference_layout(net: nn.Module, legacy: bool) -> dict[str, tuple[str, object]]:
    """Our parameter name -> (the reference's name, a function mapping the reference tensor onto ours)."""
    from .models.classifier import AttentionPool2d
    from .models.unet import AttentionBlock, ResBlock

    def squeeze(t):
        return t.squeeze(-1)

    def heads_first_to_qkv_first(heads):
        def convert(t):  # rows (head, q/k/v, channel) -> (q/k/v, head, channel)
            t = t.squeeze(-1) if t.ndim == 3 else t
            return t.reshape(heads, 3, -1, *t.shape[1:]).transpose(0, 1).reshape(t.shape)
        return convert

    layout = {}
    for prefix, module in net.named_modules():
        p = f"{prefix}." if prefix else ""
        if isinstance(module, ResBlock):
            for ours, ref in _RESBLOCK_NAMES.items():
                for kind in ("weight", "bias"):
                    if isinstance(getattr(module, ours), (nn.Conv2d, nn.Linear, nn.GroupNorm)):
                        layout[f"{p}{ours}.{kind}"] = (f"{p}{ref}.{kind}", None)
        elif isinstance(module, AttentionBlock):
            qkv = heads_first_to_qkv_first(module.num_heads) if legacy else squeeze
            layout.update({f"{p}qkv.weight": (f"{p}qkv.weight", qkv), f"{p}qkv.bias": (f"{p}qkv.bias", qkv),
                           f"{p}proj_out.weight": (f"{p}proj_out.weight", squeeze)})
        elif isinstance(module, AttentionPool2d):  # always q-k-v major (QKVAttention)
            layout.update({f"{p}pos_emb": (f"{p}positional_embedding", lambda t: t.t()),
                           f"{p}qkv.weight": (f"{p}qkv_proj.weight", squeeze),
                           f"{p}qkv.bias": (f"{p}qkv_proj.bias", None),
                           f"{p}proj.weight": (f"{p}c_proj.weight", squeeze),
                           f"{p}proj.bias": (f"{p}c_proj.bias", None)})
        elif isinstance(module, nn.Conv2d) and module.stride == (2, 2) and prefix.startswith("input_blocks."):
            layout.update({f"{p}weight": (f"{p}op.weight", None), f"{p}bias": (f"{p}op.bias", None)})
        elif (isinstance(module, nn.Sequential) and len(module) == 2 and isinstance(module[0], nn.Upsample)
              and isinstance(module[1], nn.Conv2d)):
            layout.update({f"{p}1.weight": (f"{p}conv.weight", None), f"{p}1.bias": (f"{p}conv.bias", None)})
    return layout


def _map_state_dict(net: nn.Module, state: dict[str, torch.Tensor], legacy: bool, path, flags: dict):
    own = net.state_dict()
    layout = _reference_layout(net, legacy)
    wanted = {name: layout.get(name, (name, None)) for name in own}
    missing = [ref for ref, _ in wanted.values() if ref not in state]
    unexpected = sorted(set(state) - {ref for ref, _ in wanted.values()})
    if missing or unexpected:
        raise CheckpointMismatchError(
            f"{path} does not fit the flags {_flag_summary(flags)}: "
            + "; ".join(part for part in (_few("missing", missing), _few("unexpected", unexpected)) if part)
            + f"{_diagnose(state, flags)}")
    mapped = {}
    for name, (ref, convert) in wanted.items():
        tensor = state[ref]
        if name == "label_emb.weight":  # append our null label's row (zeros: never trained)
            tensor = torch.cat([tensor, tensor.new_zeros(1, tensor.shape[1])])
        elif convert is not None:
            tensor = convert(tensor)
        if tuple(tensor.shape) != tuple(own[name].shape):
            raise CheckpointMismatchError(
                f"{path} does not fit the flags {_flag_summary(flags)}: {ref} has shape {tuple(state[ref].shape)}, "
                f"the model built from the flags needs {tuple(own[name].shape)}{_diagnose(state, flags)}")
        mapped[name] = tensor.contiguous()
    return mapped


def _few(what: str, names: list[str]) -> str:
    if not names:
        return ""
    more = f" and {len(names) - 4} more" if len(names) > 4 else ""
    return f"{len(names)} {what} tensor(s) ({', '.join(names[:4])}{more})"


def _flag_summary(flags: dict) -> str:
    keys = ("image_size", "num_channels", "num_res_blocks", "channel_mult", "attention_resolutions", "class_cond",
            "learn_sigma", "resblock_updown", "use_scale_shift_norm", "classifier_width", "classifier_depth")
    return "(" + ", ".join(f"{k}={flags[k]!r}" for k in keys if k in flags) + ")"


def _diagnose(state: dict[str, torch.Tensor], flags: dict) -> str:
    """'; the file says class_cond=True' for the flags that can be read off the tensors and disagree."""
    hints = []
    if any(k.startswith("output_blocks.") for k in state):
        cond = "label_emb.weight" in state
        if cond != bool(flags["class_cond"]):
            hints.append(f"class_cond={cond}")
        out = state.get("out.2.weight")
        if out is not None and (out.shape[0] == 6) != bool(flags["learn_sigma"]):
            hints.append(f"learn_sigma={out.shape[0] == 6}")
        width = state["time_embed.0.weight"].shape[1]
        if width != int(flags["num_channels"]):
            hints.append(f"num_channels={width}")
    else:
        width = state["time_embed.0.weight"].shape[1]
        if width != int(flags["classifier_width"]):
            hints.append(f"classifier_width={width}")
    emb = next((k for k in state if k.endswith("emb_layers.1.weight")), None)
    if emb is not None:
        out_layers = emb.replace("emb_layers.1.weight", "out_layers.0.weight")
        if out_layers in state:
            scale_shift = state[emb].shape[0] == 2 * state[out_layers].shape[0]
            key = "use_scale_shift_norm" if "output_blocks.0.0.in_layers.0.weight" in state else \
                "classifier_use_scale_shift_norm"
            if scale_shift != bool(flags.get(key)):
                hints.append(f"{key}={scale_shift}")
    return f"; the file's tensors say {', '.join(hints)}" if hints else "; check num_res_blocks, channel_mult, " \
        "attention_resolutions, resblock_updown (and the classifier_ flags for a classifier)"
