"""Experiment configurations: the diffusion, the model, the data and the training hyper-parameters.

Everything here is a small dataclass that round-trips through a plain, JSON-able dict (``to_dict`` /
``from_dict``), so a checkpoint can carry the configuration that made it and rebuild the model from it.

>>> cfg = ExperimentConfig.preset("digits")            # the shipped unconditional digits model
>>> cfg = cfg.override(["lr=3e-4", "model.model_channels=32"])
>>> model, diffusion = cfg.build_model(), cfg.diffusion.build()

Presets: ``digits`` (unconditional U-Net, learned variances with the hybrid loss, cosine schedule; Improved
DDPM), ``digits_cond`` (class-conditional, labels dropped with probability 0.1 for classifier-free guidance),
``digits_classifier`` (the noisy-image classifier for classifier guidance; Dhariwal & Nichol 2021) and ``toy``
(an MLP on a 2-D toy distribution).
"""
from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import torch

from .data import IMAGE_DATASETS, TOY_DATASETS
from .gaussian_diffusion import LOSS_TYPES, MEAN_TYPES, VAR_TYPES, GaussianDiffusion
from .schedules import SCHEDULES, get_betas

MODEL_KINDS = ("unet", "mlp", "classifier")
SAMPLER_NAMES = ("uniform", "loss-second-moment")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

# (channels, height, width) of each image dataset, and the UNetConfig presets sized for it
DATA_SHAPES = {"digits": (1, 8, 8), "digits16": (1, 16, 16), "mnist": (1, 28, 28),
               "fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
_UNET_FOR_DATA = {"digits": "digits8", "digits16": "digits16", "mnist": "mnist28", "fashion_mnist": "mnist28",
                  "cifar10": "cifar10"}
_CLASSIFIER_FOR_DATA = {"digits": "digits8_classifier", "digits16": "digits16_classifier"}
NUM_CLASSES = 10  # every image dataset of the course has 10 classes


class ConfigError(ValueError):
    """A configuration that cannot work (unknown preset, inconsistent fields, bad override)."""


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
        for name, value, choices in (("schedule", self.schedule, tuple(SCHEDULES)),
                                     ("mean_type", self.mean_type, MEAN_TYPES),
                                     ("var_type", self.var_type, VAR_TYPES),
                                     ("loss_type", self.loss_type, LOSS_TYPES)):
            if value not in choices:
                raise ConfigError(f"unknown diffusion {name} {value!r}: choose one of {list(choices)}")
        if not isinstance(self.num_timesteps, (int, np.integer)) or self.num_timesteps < 1:
            raise ConfigError(f"num_timesteps must be a positive integer, got {self.num_timesteps!r}")
        self.num_timesteps = int(self.num_timesteps)
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


def build_model(kind: str, config: dict[str, Any]) -> torch.nn.Module:
    """Build a model from its kind ("unet", "mlp", "classifier") and its config dict.

    "unet" and "classifier" take the fields of :class:`~ddpm_lite.models.UNetConfig`; "mlp" the keyword
    arguments of :class:`~ddpm_lite.models.MLPDenoiser` (data_dim, hidden, num_layers, time_embed_dim,
    out_mult).
    """
    from .models import EncoderUNetModel, MLPDenoiser, UNetConfig, UNetModel

    if kind == "unet":
        return UNetModel(UNetConfig.from_dict(config))
    if kind == "classifier":
        return EncoderUNetModel(UNetConfig.from_dict(config))
    if kind == "mlp":
        return MLPDenoiser(**_known_fields(MLPDenoiser, config, "MLPDenoiser", _MLP_FIELDS))
    raise ConfigError(f"unknown model kind {kind!r}: choose one of {list(MODEL_KINDS)}")


_MLP_FIELDS = ("data_dim", "hidden", "num_layers", "time_embed_dim", "out_mult")


def model_spec(model: torch.nn.Module) -> tuple[str, dict[str, Any]] | None:
    """(kind, config dict) that :func:`build_model` turns back into an equal architecture; None if unknown."""
    from .models import EncoderUNetModel, MLPDenoiser, UNetModel

    model = getattr(model, "module", model)  # DistributedDataParallel
    if isinstance(model, UNetModel):
        return "unet", model.config.to_dict()
    if isinstance(model, EncoderUNetModel):
        return "classifier", model.config.to_dict()
    if isinstance(model, MLPDenoiser):
        return "mlp", {"data_dim": model.data_dim, "hidden": model.inp.out_features,
                       "num_layers": len(model.blocks), "time_embed_dim": model.time_embed_dim,
                       "out_mult": model.out_mult}
    return None


def _unet_preset(name: str, **overrides) -> dict[str, Any]:
    from .models import UNetConfig

    return UNetConfig.preset(name, **overrides).to_dict()


# --------------------------------------------------------------------------- experiments


@dataclass
class ExperimentConfig:
    """One training run: what to train (model, diffusion), on what (data) and how (hyper-parameters).

    ``model_kind="classifier"`` trains the noisy classifier (cross-entropy on q_sample(x_0, t)); the other
    kinds train a denoiser with ``diffusion.training_losses``. The diffusion's ``var_type`` decides whether the
    denoiser outputs a variance (``learn_sigma`` / ``out_mult`` are set to match), and ``class_cond`` whether
    the U-Net takes labels (``num_classes``). ``batch_size`` is the global batch, split across processes
    under torchrun.
    """

    name: str = "custom"
    model_kind: str = "unet"
    model: dict[str, Any] = field(default_factory=lambda: _unet_preset("digits8"))
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: str = "digits"
    class_cond: bool = False
    label_dropout: float = 0.0  # probability of replacing a label by the null label (classifier-free guidance)
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    grad_clip: float | None = 1.0
    schedule_sampler: str = "uniform"
    mixed_precision: str = "auto"
    steps: int = 2000  # suggested length of a full run (the CLI's default --steps)
    save_every: int = 500
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.diffusion, dict):
            self.diffusion = DiffusionConfig.from_dict(self.diffusion)
        self.model = copy.deepcopy(dict(self.model))
        if self.model_kind not in MODEL_KINDS:
            raise ConfigError(f"unknown model_kind {self.model_kind!r}: choose one of {list(MODEL_KINDS)}")
        known_data = IMAGE_DATASETS + TOY_DATASETS
        if self.data not in known_data:
            raise ConfigError(f"unknown data {self.data!r}: choose one of {list(known_data)}")
        if (self.model_kind == "mlp") != (self.data in TOY_DATASETS):
            raise ConfigError(f"model_kind {self.model_kind!r} cannot train on data {self.data!r}: the MLP "
                              f"takes 2-D toy data ({', '.join(TOY_DATASETS)}), the U-Nets take images "
                              f"({', '.join(IMAGE_DATASETS)})")
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
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0 or not 0 <= self.ema_decay < 1:
            raise ConfigError(f"need lr > 0, weight_decay >= 0 and 0 <= ema_decay < 1; got lr={self.lr}, "
                              f"weight_decay={self.weight_decay}, ema_decay={self.ema_decay}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"grad_clip must be positive or None, got {self.grad_clip}")
        # the diffusion decides the output width; class_cond decides the label embedding
        if self.model_kind == "unet":
            self.model["learn_sigma"] = self.diffusion.learns_sigma
            self.model["num_classes"] = (self.model.get("num_classes") or NUM_CLASSES) if self.class_cond else None
        elif self.model_kind == "mlp":
            self.model["out_mult"] = 2 if self.diffusion.learns_sigma else 1
            if self.class_cond:
                raise ConfigError("the MLP denoiser is unconditional: class_cond needs a U-Net")
        else:
            if self.class_cond:
                raise ConfigError("class_cond is for denoisers; the classifier always sees the labels")
            self.model["num_classes"] = self.model.get("num_classes") or NUM_CLASSES

    # ---------------------------------------------------------------- derived
    @property
    def objective(self) -> str:
        """"classifier" for the noisy classifier, else "diffusion"."""
        return "classifier" if self.model_kind == "classifier" else "diffusion"

    @property
    def num_classes(self) -> int | None:
        """Classes of a class-conditional denoiser or of the classifier; None otherwise."""
        return self.model.get("num_classes") if self.model_kind != "mlp" else None

    def build_model(self) -> torch.nn.Module:
        return build_model(self.model_kind, self.model)

    def build_diffusion(self) -> GaussianDiffusion:
        return self.diffusion.build()

    # ---------------------------------------------------------------- variations
    def replace(self, **changes) -> ExperimentConfig:
        """A copy with some top-level fields changed (validated again)."""
        return ExperimentConfig.from_dict({**self.to_dict(), **{k: _plain(v) for k, v in changes.items()}})

    def with_data(self, data: str) -> ExperimentConfig:
        """The same experiment on another dataset, with the model preset sized for it.

        The U-Net of "digits" is swapped for the one of "mnist" (28x28), and so on; the learned variance and
        class conditioning carry over. Apply ``override`` after this to change the new model's fields.
        """
        if data == self.data:
            return self.replace()
        known = IMAGE_DATASETS + TOY_DATASETS
        if data not in known:
            raise ConfigError(f"unknown data {data!r}: choose one of {list(known)}")
        if (self.model_kind == "mlp") != (data in TOY_DATASETS):
            kind = "2-D toy" if data in TOY_DATASETS else "image"
            hint = "--preset toy" if data in TOY_DATASETS else "--preset digits (or digits_cond, digits_classifier)"
            raise ConfigError(f"preset {self.name!r} trains a {self.model_kind} model, which cannot train on the "
                              f"{kind} data {data!r}: use {hint}")
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

    @staticmethod
    def preset_names() -> list[str]:
        return list(_PRESETS)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["diffusion"] = self.diffusion.to_dict()
        return _plain(d)

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExperimentConfig:
        d = _known_fields(cls, d, "ExperimentConfig")
        if "diffusion" in d:
            d["diffusion"] = DiffusionConfig.from_dict(d["diffusion"])
        return cls(**d)


def preset_names() -> list[str]:
    """Names accepted by :meth:`ExperimentConfig.preset`."""
    return list(_PRESETS)


def _digits() -> ExperimentConfig:
    """Improved DDPM on the 8x8 digits: learned variances (hybrid loss), cosine schedule, T = 1000."""
    return ExperimentConfig(name="digits", model_kind="unet", model=_unet_preset("digits8"),
                            diffusion=DiffusionConfig(), data="digits", batch_size=128, lr=5e-4, ema_decay=0.999,
                            grad_clip=1.0, steps=2000, save_every=250)


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
                            model={"data_dim": 2, "hidden": 128, "num_layers": 3, "time_embed_dim": 64,
                                   "out_mult": 1},
                            diffusion=DiffusionConfig("linear", 1000, "eps", "fixed_small", "simple"),
                            data="swiss_roll", batch_size=256, lr=1e-3, ema_decay=0.995, grad_clip=1.0, steps=3000,
                            save_every=500)


_PRESETS = {"digits": _digits, "digits_cond": _digits_cond, "digits_classifier": _digits_classifier, "toy": _toy}


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
