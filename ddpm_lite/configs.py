"""Experiment configurations: the diffusion, the model, the data and the training hyper-parameters.

Everything here is a small dataclass that round-trips through a plain, JSON-able dict (``to_dict`` /
``from_dict``), so a checkpoint can carry the configuration that made it and rebuild the model from it.

>>> cfg = ExperimentConfig.preset("digits")            # the shipped unconditional digits model
>>> cfg = cfg.override(["lr=3e-4", "model.model_channels=32"])
>>> cfg.model.model_channels                          # the model part is typed: a UNetConfig or an MLPConfig
32
>>> model, diffusion = cfg.build_model(), cfg.diffusion.build()

Every field is checked when a config is made: its type (``class_cond=abc`` is refused, not read as true), its
range (``model.hidden=0``, ``lr=nan``) and its consistency with the others (an MLP on images), each with one
:class:`ConfigError` line that names the field and what it accepts.

Presets: ``digits`` (unconditional U-Net, learned variances with the hybrid loss, cosine schedule; Improved
DDPM), ``digits_cond`` (class-conditional, labels dropped with probability 0.1 for classifier-free guidance),
``digits_classifier`` (the noisy-image classifier for classifier guidance; Dhariwal & Nichol 2021) and ``toy``
(an MLP on a 2-D toy distribution); for a CPU, ``digits_fast`` (the digits recipe tuned for minutes of CPU),
``digits16`` and ``digits28`` (the digits upsampled); for one GPU (minutes on a Colab T4), ``mnist``,
``fashion_mnist`` and ``cifar10`` (:data:`GPU_PRESETS`; their sizes, FLOPs and times are in docs/gpu.md).
:func:`choose_preset` picks the GPU preset when CUDA and the data are there.
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np
import torch

from .data import IMAGE_DATASETS, TOY_DATASETS
from .gaussian_diffusion import LOSS_TYPES, MEAN_TYPES, VAR_TYPES, GaussianDiffusion
from .schedules import SCHEDULES, get_betas

MODEL_KINDS = ("unet", "mlp", "classifier")
SAMPLER_NAMES = ("uniform", "loss-second-moment")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

# (channels, height, width) of each image dataset, and the UNetConfig presets sized for it
DATA_SHAPES = {"digits": (1, 8, 8), "digits16": (1, 16, 16), "digits28": (1, 28, 28), "mnist": (1, 28, 28),
               "fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
_UNET_FOR_DATA = {"digits": "digits8", "digits16": "digits16", "digits28": "digits28", "mnist": "mnist28",
                  "fashion_mnist": "mnist28", "cifar10": "cifar10_small"}
_CLASSIFIER_FOR_DATA = {"digits": "digits8_classifier", "digits16": "digits16_classifier"}
NUM_CLASSES = 10  # every image dataset of the course has 10 classes


class ConfigError(ValueError):
    """A configuration that cannot work (unknown preset, inconsistent fields, bad override)."""


# --------------------------------------------------------------------------- field types


def check_field_types(obj, what: str) -> None:
    """Check (and normalise) every field of the dataclass ``obj`` against its annotation.

    bool fields take only true/false; int fields integers (an integral float such as 1e3 is converted); float
    fields finite numbers; str fields strings; ``tuple[int, ...]`` lists or tuples of integers; ``X | None``
    also None. Raises :class:`ConfigError` naming the field, the value and what it accepts.
    """
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        try:
            setattr(obj, f.name, _coerce(value, hints[f.name]))
        except TypeError as err:
            name = f"{what}.{f.name}" if what else f.name
            raise ConfigError(f"{name} must be {err}, got {value!r}") from None


def _coerce(value, hint):
    """``value`` as the type ``hint`` asks for, or TypeError("<what it accepts>")."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if value is None and len(options) < len(args):
            return None
        if len(options) == 1:
            try:
                return _coerce(value, options[0])
            except TypeError as err:
                raise TypeError(f"{err} or null") from None
        return value  # unions of several types (the model part): checked by the owner
    if hint is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        raise TypeError("true or false")
    if hint is int:
        if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
            return int(value)
        if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
            return int(value)
        raise TypeError("an integer")
    if hint is float:
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)) \
                and math.isfinite(value):
            return float(value)
        raise TypeError("a finite number")
    if hint is str:
        if isinstance(value, str):
            return value
        raise TypeError("a string")
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if isinstance(value, (list, tuple)):
            return tuple(_coerce(v, args[0]) for v in value)
        raise TypeError(f"a list of {args[0].__name__}s")
    return value


# --------------------------------------------------------------------------- diffusion


@dataclass
class DiffusionConfig:
    """The arguments of :class:`~ddpm_lite.GaussianDiffusion`, with the schedule by name.

    The defaults are Improved DDPM's: cosine schedule, T = 1000, the model predicts eps and the variance
    interpolation v ("learned_range"), trained with the hybrid loss (``loss_type="simple"`` + learned variance).
    """

    schedule: str = "cosine"
    num_timesteps: int = 1000
    mean_type: str = "eps"
    var_type: str = "learned_range"
    loss_type: str = "simple"

    def __post_init__(self):
        check_field_types(self, "diffusion")
        for name, value, choices in (("schedule", self.schedule, tuple(SCHEDULES)),
                                     ("mean_type", self.mean_type, MEAN_TYPES),
                                     ("var_type", self.var_type, VAR_TYPES),
                                     ("loss_type", self.loss_type, LOSS_TYPES)):
            if value not in choices:
                raise ConfigError(f"unknown diffusion {name} {value!r}: choose one of {list(choices)}")
        if self.num_timesteps < 1:
            raise ConfigError(f"diffusion.num_timesteps must be a positive integer, got {self.num_timesteps!r}")
        if self.schedule == "linear" and self.num_timesteps <= 20:
            raise ConfigError(f"the linear schedule (scaled by 1000/T) ends at beta = {20 / self.num_timesteps:g} "
                              f"for T = {self.num_timesteps}, which destroys x_0 completely: use T > 20, or the "
                              "cosine schedule")

    @property
    def learns_sigma(self) -> bool:
        """True when the model must also output the variance (twice the channels)."""
        return self.var_type in ("learned", "learned_range")

    def build(self) -> GaussianDiffusion:
        return GaussianDiffusion(get_betas(self.schedule, self.num_timesteps), self.mean_type, self.var_type,
                                 self.loss_type)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DiffusionConfig:
        return cls(**_known_fields(cls, d, "DiffusionConfig"))

    @classmethod
    def from_diffusion(cls, diffusion: GaussianDiffusion) -> DiffusionConfig | None:
        """The config of ``diffusion`` when its betas are a named schedule; None for custom betas."""
        if getattr(diffusion, "timestep_map", None) is not None:
            return None  # a respaced diffusion: train on the original chain
        for name in SCHEDULES:
            betas = get_betas(name, diffusion.num_timesteps)
            if np.allclose(betas, diffusion.betas, rtol=1e-12, atol=0):
                return cls(name, diffusion.num_timesteps, diffusion.mean_type, diffusion.var_type,
                           diffusion.loss_type)
        return None


# --------------------------------------------------------------------------- models

def model_config(kind: str | None, config) -> Any:
    """The typed architecture of a model kind: a :class:`~ddpm_lite.models.UNetConfig` for "unet" and
    "classifier", an :class:`~ddpm_lite.models.MLPConfig` for "mlp"; from a dict or a config. None stays None
    (a network built by hand, outside the course's kinds)."""
    from .models import MLPConfig, UNetConfig

    if kind is None:
        if config is not None:
            raise ConfigError("a model config needs its model_kind (unet, mlp or classifier)")
        return None
    if kind not in MODEL_KINDS:
        raise ConfigError(f"unknown model_kind {kind!r}: choose one of {list(MODEL_KINDS)}")
    cls = MLPConfig if kind == "mlp" else UNetConfig
    if isinstance(config, cls):
        return config
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        raise ConfigError(f"model_kind {kind!r} takes a {cls.__name__}, got a {type(config).__name__}")
    if not isinstance(config, dict):
        raise ConfigError(f"the model config must be a {cls.__name__} or a dict, got {type(config).__name__}")
    try:
        return cls.from_dict(config)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(f"model: {err}") from None


def build_model(kind: str, config) -> torch.nn.Module:
    """Build a model from its kind ("unet", "mlp", "classifier") and its config (typed, or a dict)."""
    from .models import EncoderUNetModel, MLPDenoiser, UNetModel

    config = model_config(kind, config)
    if kind == "unet":
        return UNetModel(config)
    if kind == "classifier":
        return EncoderUNetModel(config)
    return MLPDenoiser.from_config(config)


def model_spec(model: torch.nn.Module) -> tuple[str, Any] | None:
    """(kind, typed config) that :func:`build_model` turns back into an equal architecture; None if unknown."""
    from .models import EncoderUNetModel, MLPDenoiser, UNetModel

    model = getattr(model, "module", model)  # DistributedDataParallel
    for kind, cls in (("unet", UNetModel), ("classifier", EncoderUNetModel), ("mlp", MLPDenoiser)):
        if isinstance(model, cls):
            return kind, dataclasses.replace(model.config)
    return None


def _unet_preset(name: str, **overrides):
    from .models import UNetConfig

    return UNetConfig.preset(name, **overrides)


def check_data_fits(model_kind: str | None, data: str | None, preset: str | None = None) -> None:
    """Raise :class:`ConfigError` when a model kind cannot train on a dataset: the MLP takes 2-D toy data,
    the U-Nets take images. Unknown names are refused too."""
    known = IMAGE_DATASETS + TOY_DATASETS
    if data is not None and data not in known:
        raise ConfigError(f"unknown data {data!r}: choose one of {list(known)}")
    if model_kind is None or data is None:
        return
    if (model_kind == "mlp") != (data in TOY_DATASETS):
        kind = "2-D toy" if data in TOY_DATASETS else "image"
        hint = "--preset toy" if data in TOY_DATASETS else "--preset digits (or digits_cond, digits_classifier)"
        who = f"preset {preset!r} trains a {model_kind} model, which" if preset else f"a {model_kind} model"
        raise ConfigError(f"{who} cannot train on the {kind} data {data!r} (the MLP takes 2-D toy data: "
                          f"{', '.join(TOY_DATASETS)}; the U-Nets take images: {', '.join(IMAGE_DATASETS)}): "
                          f"use {hint}")


# --------------------------------------------------------------------------- experiments

# the fields of ExperimentConfig that are hyper-parameters of the training loop (Trainer's keyword arguments)
TRAINING_FIELDS = ("batch_size", "lr", "weight_decay", "ema_decay", "grad_clip", "schedule_sampler", "class_cond",
                   "label_dropout", "mixed_precision", "channels_last", "torch_compile", "save_every", "seed",
                   "lr_warmup", "min_snr_gamma")


@dataclass
class ExperimentConfig:
    """One training run: what to train (model, diffusion), on what (data) and how (hyper-parameters).

    ``model`` is the architecture, typed by ``model_kind``: a :class:`~ddpm_lite.models.UNetConfig` for "unet"
    and "classifier" (the noisy classifier, trained with cross-entropy on q_sample(x_0, t)), an
    :class:`~ddpm_lite.models.MLPConfig` for "mlp"; a dict is converted. The diffusion's ``var_type`` decides
    whether the denoiser outputs a variance (``learn_sigma`` / ``out_mult`` are set to match), and
    ``class_cond`` whether the U-Net takes labels (``num_classes``). ``batch_size`` is the global batch, split
    across processes under torchrun.

    How fast it runs, without changing what is computed (beyond rounding): ``mixed_precision`` ("auto": bf16
    autocast on GPUs with native bf16, Ampere and later; fp16 with a gradient scaler on older ones such as
    Colab's T4; fp32 off CUDA; see :func:`resolve_precision`), ``channels_last`` (None: the NHWC memory format
    on CUDA when autocast is on, see :func:`resolve_channels_last`) and ``torch_compile``.

    A Trainer built by hand around a network from elsewhere records ``model_kind=None`` and ``model=None``
    (and ``diffusion=None`` for betas that are no named schedule, ``data=None`` for tensors): such a config
    describes the run but cannot rebuild its model.
    """

    name: str = "custom"
    model_kind: str | None = "unet"
    model: Any = field(default_factory=lambda: _unet_preset("digits8"))
    diffusion: DiffusionConfig | None = field(default_factory=DiffusionConfig)
    data: str | None = "digits"
    class_cond: bool = False
    label_dropout: float = 0.0  # probability of replacing a label by the null label (classifier-free guidance)
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    grad_clip: float | None = 1.0
    schedule_sampler: str = "uniform"
    mixed_precision: str = "auto"
    channels_last: bool | None = None  # None: on CUDA with fp16/bf16 autocast (see resolve_channels_last)
    torch_compile: bool = False  # torch.compile the training forward (pays back only on long runs)
    steps: int = 2000  # suggested length of a full run (the CLI's default --steps)
    save_every: int = 500
    seed: int = 0
    lr_warmup: int = 0  # steps of linear learning-rate warm-up: lr * min(1, (step + 1) / lr_warmup) (0: none)
    min_snr_gamma: float | None = None  # Min-SNR-gamma weighting of the mse term (train.min_snr_weights; null: none)

    def __post_init__(self):
        if isinstance(self.diffusion, dict):
            self.diffusion = DiffusionConfig.from_dict(self.diffusion)
        elif self.diffusion is not None and not isinstance(self.diffusion, DiffusionConfig):
            raise ConfigError(f"diffusion must be a DiffusionConfig or a dict, got {type(self.diffusion).__name__}")
        check_field_types(self, "")
        self.model = model_config(self.model_kind, self.model)
        check_data_fits(self.model_kind, self.data)
        if self.schedule_sampler not in SAMPLER_NAMES:
            raise ConfigError(f"unknown schedule_sampler {self.schedule_sampler!r}: choose one of "
                              f"{list(SAMPLER_NAMES)}")
        if self.mixed_precision not in PRECISIONS:
            raise ConfigError(f"unknown mixed_precision {self.mixed_precision!r}: choose one of {list(PRECISIONS)}")
        if not 0 <= self.label_dropout < 1:
            raise ConfigError(f"label_dropout must lie in [0, 1), got {self.label_dropout}")
        if self.label_dropout and not self.class_cond:
            raise ConfigError("label_dropout needs class_cond=True (it drops labels to the null label)")
        for name in ("batch_size", "steps", "save_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0 or not 0 <= self.ema_decay < 1:
            raise ConfigError(f"need lr > 0, weight_decay >= 0 and 0 <= ema_decay < 1; got lr={self.lr}, "
                              f"weight_decay={self.weight_decay}, ema_decay={self.ema_decay}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"grad_clip must be positive or null, got {self.grad_clip}")
        if self.lr_warmup < 0:
            raise ConfigError(f"lr_warmup must be a number of steps >= 0 (0: no warm-up), got {self.lr_warmup}")
        if self.min_snr_gamma is not None:
            self._check_min_snr()
        self._fit_model_to_task()

    def _check_min_snr(self) -> None:
        if self.min_snr_gamma <= 0:
            raise ConfigError(f"min_snr_gamma must be positive or null (no weighting), got {self.min_snr_gamma}")
        if self.model_kind == "classifier":
            raise ConfigError("min_snr_gamma weights the diffusion loss; the classifier's cross-entropy has none: "
                              "use min_snr_gamma=null")
        if self.diffusion is not None and self.diffusion.loss_type not in ("simple", "rescaled_mse"):
            raise ConfigError(f"min_snr_gamma weights the mse term, and diffusion.loss_type "
                              f"{self.diffusion.loss_type!r} has none: use 'simple' or 'rescaled_mse', or "
                              "min_snr_gamma=null")
        if self.diffusion is not None and self.diffusion.mean_type not in ("eps", "x0"):
            raise ConfigError(f"min_snr_gamma is defined for diffusion.mean_type 'eps' or 'x0', not "
                              f"{self.diffusion.mean_type!r}: use min_snr_gamma=null")

    def _fit_model_to_task(self) -> None:
        """The diffusion decides the output width, class_cond the label embedding."""
        learns_sigma = self.diffusion.learns_sigma if self.diffusion is not None else None
        try:
            if self.model_kind == "unet":
                changes = {"num_classes": (self.model.num_classes or NUM_CLASSES) if self.class_cond else None}
                if learns_sigma is not None:
                    changes["learn_sigma"] = learns_sigma
                self.model = dataclasses.replace(self.model, **changes)
            elif self.model_kind == "mlp":
                if self.class_cond:
                    raise ConfigError("the MLP denoiser is unconditional: class_cond needs a U-Net")
                if learns_sigma is not None:
                    self.model = dataclasses.replace(self.model, out_mult=2 if learns_sigma else 1)
            elif self.model_kind == "classifier":
                if self.class_cond:
                    raise ConfigError("class_cond is for denoisers; the classifier always sees the labels")
                self.model = dataclasses.replace(self.model, num_classes=self.model.num_classes or NUM_CLASSES,
                                                 learn_sigma=False)
        except ConfigError:
            raise
        except ValueError as err:
            raise ConfigError(f"model: {err}") from None

    # ---------------------------------------------------------------- derived
    @property
    def objective(self) -> str:
        """"classifier" for the noisy classifier, else "diffusion"."""
        return "classifier" if self.model_kind == "classifier" else "diffusion"

    @property
    def num_classes(self) -> int | None:
        """Classes of a class-conditional denoiser or of the classifier; None otherwise."""
        return getattr(self.model, "num_classes", None)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one example: (C, H, W) for the U-Nets, (data_dim,) for the MLP."""
        if self.model_kind == "mlp":
            return (self.model.data_dim,)
        if self.model is None:
            raise ConfigError("this config has no model (it was recorded for a network built by hand)")
        return (self.model.in_channels, self.model.image_size, self.model.image_size)

    def build_model(self) -> torch.nn.Module:
        if self.model is None:
            raise ConfigError("this config has no model to build (it was recorded for a network built by hand)")
        return build_model(self.model_kind, self.model)

    def build_diffusion(self) -> GaussianDiffusion:
        if self.diffusion is None:
            raise ConfigError("this config has no named diffusion (it was recorded for betas given by hand)")
        return self.diffusion.build()

    def training_arguments(self) -> dict[str, Any]:
        """The hyper-parameters of the training loop (:data:`TRAINING_FIELDS`) as a dict."""
        return {name: getattr(self, name) for name in TRAINING_FIELDS}

    # ---------------------------------------------------------------- variations
    def replace(self, **changes) -> ExperimentConfig:
        """A copy with some top-level fields changed (validated again)."""
        d = self.to_dict()
        for key, value in changes.items():
            if key not in d:
                raise ConfigError(f"unknown config field {key!r}; known fields: {sorted(d)}")
            d[key] = _plain(value)
        return ExperimentConfig.from_dict(d)

    def with_data(self, data: str) -> ExperimentConfig:
        """The same experiment on another dataset, with the model preset sized for it.

        The U-Net of "digits" is swapped for the one of "mnist" (28x28), and so on; the learned variance and
        class conditioning carry over. Apply ``override`` after this to change the new model's fields.
        """
        if data == self.data:
            return self.replace()
        check_data_fits(self.model_kind, data, preset=self.name)
        if self.model_kind == "mlp":
            return self.replace(data=data)
        if self.model_kind == "unet":
            model = _unet_preset(_UNET_FOR_DATA[data])
        elif data in _CLASSIFIER_FOR_DATA:
            model = _unet_preset(_CLASSIFIER_FOR_DATA[data])
        else:  # a classifier from the data's U-Net preset: one block per level, no dropout
            model = _unet_preset(_UNET_FOR_DATA[data], num_res_blocks=1, dropout=0.0, learn_sigma=False,
                                 num_classes=NUM_CLASSES)
        return self.replace(data=data, model=model)

    def override(self, assignments: Iterable[str] | dict[str, Any]) -> ExperimentConfig:
        """A copy with fields set from ``"key=value"`` strings (or a dict), values parsed as JSON when they can
        be: ``["lr=3e-4", "grad_clip=null", "model.model_channels=32", "diffusion.num_timesteps=100"]``."""
        if isinstance(assignments, dict):
            items = list(assignments.items())
        else:
            items = []
            for text in assignments:
                key, sep, value = text.partition("=")
                if not sep or not key.strip():
                    raise ConfigError(f"cannot read override {text!r}: write key=value, e.g. lr=3e-4 or "
                                      "model.model_channels=32")
                items.append((key.strip(), _parse_value(value.strip())))
        d = self.to_dict()
        for key, value in items:
            parts = key.split(".")
            target = d
            for part in parts[:-1]:
                if not isinstance(target.get(part), dict):
                    raise ConfigError(f"unknown config key {key!r}: {part!r} is not a section; sections are "
                                      "model and diffusion")
                target = target[part]
            if parts[-1] not in target:
                raise ConfigError(f"unknown config key {key!r}; known keys here: {sorted(target)}")
            target[parts[-1]] = _plain(value)
        return ExperimentConfig.from_dict(d)

    # ---------------------------------------------------------------- presets and dicts
    @classmethod
    def preset(cls, name: str, **overrides) -> ExperimentConfig:
        """A named experiment (see :func:`preset_names`), optionally with top-level fields changed."""
        if name not in _PRESETS:
            raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(_PRESETS)}")
        cfg = _PRESETS[name]()
        return cfg.replace(**overrides) if overrides else cfg

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-able dict (what checkpoints store); :meth:`from_dict` is its inverse."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return _plain(d)

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExperimentConfig:
        d = _known_fields(cls, d, "ExperimentConfig")
        try:
            return cls(**d)
        except TypeError as err:  # a wrong type where the checks above expect a structure
            raise ConfigError(f"cannot read the experiment config: {err}") from None


def preset_names() -> list[str]:
    """Names accepted by :meth:`ExperimentConfig.preset`."""
    return list(_PRESETS)


def _digits() -> ExperimentConfig:
    """Improved DDPM on the 8x8 digits: learned variances (hybrid loss), cosine schedule, T = 1000."""
    return ExperimentConfig(name="digits", model_kind="unet", model=_unet_preset("digits8"),
                            diffusion=DiffusionConfig(), data="digits", batch_size=128, lr=5e-4, ema_decay=0.999,
                            grad_clip=1.0, steps=2000, save_every=250)


def _digits_fast() -> ExperimentConfig:
    """The digits recipe for a CPU budget of minutes (bench/time_to_quality.py; docs/benchmarks.md, "Time to
    quality"): the same model and diffusion, without dropout (a run of a few thousand steps does not overfit),
    lr 1e-3 warmed up over 100 steps, and the mse term weighted by Min-SNR-5 (Hang et al. 2023)."""
    return _digits().override({"name": "digits_fast", "model.dropout": 0.0, "lr": 1e-3, "lr_warmup": 100,
                               "min_snr_gamma": 5.0})


def _digits_cond() -> ExperimentConfig:
    """The same, class-conditional; labels are dropped to the null label 10% of the time, so the one model is
    both p(x | y) and p(x) for classifier-free guidance."""
    return _digits().replace(name="digits_cond", class_cond=True, label_dropout=0.1)


def _digits_classifier() -> ExperimentConfig:
    """The noisy-digit classifier p(y | x_t, t) for classifier guidance, on the same diffusion as "digits"."""
    return ExperimentConfig(name="digits_classifier", model_kind="classifier",
                            model=_unet_preset("digits8_classifier"), diffusion=DiffusionConfig(), data="digits",
                            batch_size=128, lr=1e-3, weight_decay=0.05, ema_decay=0.999, grad_clip=1.0, steps=2000,
                            save_every=250)


def _toy() -> ExperimentConfig:
    """DDPM on a 2-D swiss roll: an MLP predicting eps, linear schedule, fixed variances, L_simple."""
    return ExperimentConfig(name="toy", model_kind="mlp",
                            model={"data_dim": 2, "hidden": 128, "num_layers": 3, "time_embed_dim": 64},
                            diffusion=DiffusionConfig("linear", 1000, "eps", "fixed_small", "simple"),
                            data="swiss_roll", batch_size=256, lr=1e-3, ema_decay=0.995, grad_clip=1.0, steps=3000,
                            save_every=500)


def _digits16() -> ExperimentConfig:
    """The digits upsampled to 16x16 (the digits16 U-Net), for a CPU: the digits recipe at 4x the pixels."""
    return _digits().with_data("digits16").replace(name="digits16", steps=2000, save_every=250)


def _digits28() -> ExperimentConfig:
    """The digits upsampled to MNIST's 28x28 (the small digits28 U-Net), for a CPU: the MNIST code path on data
    that needs no download; batch 64 keeps a step well under a second on one laptop core."""
    return _digits().with_data("digits28").replace(name="digits28", batch_size=64, steps=2000, save_every=250)


def _mnist() -> ExperimentConfig:
    """MNIST on one GPU: the digits recipe (Improved DDPM: cosine schedule, learned variances, hybrid loss) with
    the mnist28 U-Net (1.9M parameters), 3200 steps of 256 images (14 epochs of the 60,000 training images)."""
    return _digits().with_data("mnist").replace(name="mnist", batch_size=256, lr=5e-4, steps=3200, save_every=400)


def _fashion_mnist() -> ExperimentConfig:
    """Fashion-MNIST on one GPU: the MNIST preset on the 60,000 clothes images."""
    return _mnist().replace(name="fashion_mnist", data="fashion_mnist")


def _cifar10() -> ExperimentConfig:
    """CIFAR-10 on one GPU: the digits recipe with the cifar10_small U-Net (2.7M parameters), 2500 steps of 256
    images (13 epochs of the 50,000 training images). Minutes, not the days of Improved DDPM's CIFAR-10 model:
    expect colours and layouts of scenes, not sharp objects."""
    return _digits().with_data("cifar10").replace(name="cifar10", batch_size=256, lr=3e-4, steps=2500,
                                                  save_every=500)


_PRESETS = {"digits": _digits, "digits_cond": _digits_cond, "digits_classifier": _digits_classifier, "toy": _toy,
            "digits_fast": _digits_fast, "digits16": _digits16, "digits28": _digits28, "mnist": _mnist,
            "fashion_mnist": _fashion_mnist, "cifar10": _cifar10}
GPU_PRESETS = ("mnist", "fashion_mnist", "cifar10")  # sized for one GPU: minutes on a Colab T4
CPU_PRESETS = ("digits", "digits_fast", "digits16", "digits28")  # for a laptop CPU, on the embedded digits


# --------------------------------------------------------------------------- how fast it runs


def resolve_precision(mode: str, device: str | torch.device) -> str:
    """What ``mixed_precision=mode`` means on ``device``: "fp32", "bf16" or "fp16".

    "auto" is bf16 autocast on a GPU with native bf16 (compute capability 8.0 and later: A100, H100, RTX 30xx),
    fp16 with a gradient scaler on older GPUs (Colab's T4 is 7.5; there ``torch.cuda.is_bf16_supported()`` says
    True, because bf16 can be emulated, but emulated bf16 is slow), and fp32 off CUDA. fp16 needs CUDA.
    """
    if mode not in PRECISIONS:
        raise ConfigError(f"unknown mixed_precision {mode!r}: choose one of {list(PRECISIONS)}")
    device = torch.device(device)
    cuda = device.type == "cuda"
    if mode == "auto":
        if not cuda:
            return "fp32"
        native_bf16 = bool(torch.version.hip) or torch.cuda.get_device_capability(device)[0] >= 8
        return "bf16" if native_bf16 else "fp16"
    if mode == "fp16" and not cuda:
        raise ConfigError("fp16 mixed precision needs CUDA; use mixed_precision='fp32' (or 'bf16')")
    return mode


def resolve_channels_last(setting: bool | None, device: str | torch.device, precision: str) -> bool:
    """Whether to train in the channels_last (NHWC) memory format: ``setting`` when given; for None, on CUDA
    with fp16/bf16 autocast on a GPU with tensor cores (compute capability 7.0 and later), where cuDNN's
    tensor-core convolutions work in NHWC and NCHW costs a transpose around each one (NVIDIA's performance
    guide for convolutions; PyTorch's channels_last tutorial). bench/gpu_check.py measures both formats on each
    GPU preset; docs/gpu.md records where it wins."""
    if setting is not None:
        return bool(setting)
    device = torch.device(device)
    return device.type == "cuda" and precision in ("fp16", "bf16") and not torch.version.hip \
        and torch.cuda.get_device_capability(device)[0] >= 7


# --------------------------------------------------------------------------- the notebooks' choice


@dataclass
class PresetChoice:
    """What :func:`choose_preset` picked: the config, the device, whether it is the GPU path, the training data
    (already loaded) and one line saying which path and why (``str(choice)``)."""

    config: ExperimentConfig
    device: torch.device
    on_gpu: bool
    data: Any
    reason: str

    def __str__(self) -> str:
        return self.reason


def choose_preset(gpu: str = "mnist", cpu: str = "digits", device: str | torch.device | None = None,
                  download: bool = True, root=None) -> PresetChoice:
    """The GPU preset ``gpu`` when ``device`` (default: :func:`~ddpm_lite.runtime.default_device`) is a CUDA GPU
    and its dataset is on disk or can be downloaded (torchvision shows a progress bar); else the CPU preset
    ``cpu`` on the embedded digits, the offline default (on the GPU when there is one). The choice's ``reason``
    says which path was taken and why; print it.

    >>> choice = choose_preset("mnist")           # in a notebook
    >>> print(choice)                             # "GPU path: ..." or "CPU path: ..."
    >>> trainer = Trainer.from_config(choice.config, choice.data, device=choice.device)
    """
    from .data import DatasetNotFoundError, load_dataset
    from .runtime import check_device

    for name, allowed in ((gpu, GPU_PRESETS + CPU_PRESETS), (cpu, CPU_PRESETS)):
        if name not in allowed:
            raise ConfigError(f"choose_preset: {name!r} is not one of {list(allowed)}")
    device = check_device(device)
    fallback = ExperimentConfig.preset(cpu)
    if device.type != "cuda":
        reason = (f"CPU path: no CUDA GPU here (device {device}), so the {cpu!r} preset on the embedded "
                  f"{_data_words(fallback)}, which need no download (in Colab: Runtime > Change runtime type > "
                  "T4 GPU, then run the notebook again for the GPU path)")
        return PresetChoice(fallback, device, False, load_dataset(fallback.data), reason)
    config = ExperimentConfig.preset(gpu)
    gpu_name = torch.cuda.get_device_name(device)
    try:
        data = load_dataset(config.data, "train", root=root, download=download)
    except DatasetNotFoundError as err:
        why = str(err).split(". ")[0]
        reason = (f"GPU ({gpu_name}), but {why}: so the {cpu!r} preset on the embedded {_data_words(fallback)}, "
                  "on the GPU")
        return PresetChoice(fallback, device, False, load_dataset(fallback.data), reason)
    precision = resolve_precision(config.mixed_precision, device)
    layout = "channels_last" if resolve_channels_last(config.channels_last, device, precision) else "NCHW"
    reason = (f"GPU path: {gpu_name}, the {gpu!r} preset on {_data_words(config)} ({len(data):,} training images; "
              f"{config.model.image_size}x{config.model.image_size} U-Net with "
              f"{_parameters(config) / 1e6:.1f}M parameters; {config.steps} steps of {config.batch_size} images; "
              f"{_PRECISION_WORDS[precision]}, {layout})")
    return PresetChoice(config, device, True, data, reason)


_PRECISION_WORDS = {"fp32": "float32", "bf16": "bf16 autocast", "fp16": "fp16 autocast with a gradient scaler"}
_DATA_WORDS = {"digits": "8x8 digits", "digits16": "digits at 16x16", "digits28": "digits at 28x28",
               "mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}


def _data_words(config: ExperimentConfig) -> str:
    return _DATA_WORDS.get(config.data, str(config.data))


def _parameters(config: ExperimentConfig) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in config.build_model().parameters())


# --------------------------------------------------------------------------- helpers


def _known_fields(cls, d: dict[str, Any], what: str, names: Iterable[str] | None = None) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise ConfigError(f"{what} must be a dict, got {type(d).__name__}")
    known = set(names) if names is not None else {f.name for f in dataclasses.fields(cls)}
    extra = sorted(set(d) - known)
    if extra:
        raise ConfigError(f"unknown {what} fields {extra}; known fields: {sorted(known)}")
    return dict(d)


def _parse_value(text: str) -> Any:
    """JSON when it parses ("3e-4", "null", "[1, 2]", "true"), else the string itself ("cosine")."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _plain(value: Any) -> Any:
    """Tuples to lists, numpy scalars to Python: a JSON-able copy."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(value.to_dict() if hasattr(value, "to_dict") else dataclasses.asdict(value))
    return value
