"""One training loop for every model of the course: denoisers and the noisy classifier, notebook and CLI,
one CPU or many GPUs.

>>> trainer = Trainer.from_config(ExperimentConfig.preset("digits"), checkpoint_path="runs/digits/checkpoint.pt")
>>> trainer.train(2000)                       # again later to continue; Ctrl-C saves a checkpoint first
>>> images = trainer.sample(64, steps=50)     # from the EMA weights
>>> trainer = Trainer.resume("runs/digits/checkpoint.pt")   # continues bit for bit

What one step does:

1. batch ``step`` of the data stream, a pure function of (seed, step) (:func:`ddpm_lite.data.batch_indices`);
   under torchrun each process takes its slice of the global batch;
2. t ~ the timestep sampler (uniform, or Improved DDPM's importance sampler, section 3.3) with weights
   1 / (T p(t)), and the noise, both drawn for the global batch so that N processes compute what one would;
3. the objective: the diffusion loss ``mean(weights * diffusion.training_losses(...)["loss"])`` (labels passed
   as ``y`` for class-conditional models, replaced by the null label with probability ``label_dropout``; with
   ``min_snr_gamma`` the mse term weighted by :func:`min_snr_weights`), or for the noisy classifier the
   cross-entropy of ``classifier(q_sample(x_0, t), t)``;
4. backward (in bf16/fp16 autocast on CUDA), gradient clipping, a finite check of the loss, AdamW (its learning
   rate warmed up linearly over the first ``lr_warmup`` steps), and the
   EMA update ``ema <- d * ema + (1 - d) * params`` with ``d = min(ema_decay, (1 + step) / (10 + step))``.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm.auto import tqdm

from .checkpoint import (
    FORMAT,
    VERSION,
    CheckpointError,
    check_compatible,
    check_fits_config,
    load_checkpoint,
    load_state_dict_checked,
    resolve_path,
    run_lock,
    save_checkpoint,
)
from .configs import (
    TRAINING_FIELDS,
    ConfigError,
    DiffusionConfig,
    ExperimentConfig,
    _plain,
    model_spec,
    resolve_channels_last,
    resolve_precision,
)
from .data import IMAGE_DATASETS, TOY_DATASETS, ImageDataset, batch_indices, load_dataset, toy_2d
from .gaussian_diffusion import GaussianDiffusion
from .resample import LossSecondMomentResampler, ScheduleSampler, UniformSampler, create_named_schedule_sampler
from .runtime import default_device, steps_in
from .sampling import generate

TOY_TRAIN_SIZE = 20_000  # points drawn once for a toy training set
Callback = Callable[["Trainer", int, dict], Any]


class TrainingDivergedError(RuntimeError):
    """The loss (or the gradient norm) became NaN or infinite; the weights were not updated with it."""

    def __init__(self, message: str, step: int, term: str, value: float):
        super().__init__(message)
        self.step, self.term, self.value = step, term, value


class StopTraining(Exception):
    """Raise from a callback to end :meth:`Trainer.train` early, as if its steps were done."""


def every(k: int, fn: Callback) -> Callback:
    """A callback that calls ``fn(trainer, step, logs)`` every ``k`` steps (and not otherwise)."""
    if k < 1:
        raise ValueError(f"every(k, fn) needs k >= 1, got {k}")

    def callback(trainer, step, logs):
        if step % k == 0:
            return fn(trainer, step, logs)

    callback.__name__ = f"every_{k}_{getattr(fn, '__name__', 'callback')}"
    return callback


# --------------------------------------------------------------------------- data


def load_data(name: str, split: str = "train", root=None, download: bool = False, seed: int = 0):
    """An image dataset (:func:`ddpm_lite.data.load_dataset`) or, for a toy name, a fixed tensor of 2-D points
    (train: ``TOY_TRAIN_SIZE`` points from ``seed``; test: as many from another seed)."""
    if name in TOY_DATASETS:
        return toy_2d(name, TOY_TRAIN_SIZE, seed=seed if split == "train" else seed + 10_000)
    if name in IMAGE_DATASETS:
        return load_dataset(name, split, root=root, download=download)
    raise ConfigError(f"unknown data {name!r}: choose one of {list(IMAGE_DATASETS + TOY_DATASETS)}")


class _Source:
    """Random access to (x, y) batches on the training device, whatever form the data came in.

    An image dataset under ``GPU_DATA_LIMIT`` bytes moves to the GPU once (MNIST's 47 MB and CIFAR-10's 150 MB
    of uint8 pixels do): a batch is then a gather on the GPU, with no copy per step. A larger one stays on the
    CPU and each CUDA batch goes through pinned (page-locked) memory, so its copy to the GPU is asynchronous."""

    GPU_DATA_LIMIT = 1 << 30

    def __init__(self, data, device: torch.device):
        self.device = device
        self.name = getattr(data, "name", None)
        self.num_classes = getattr(data, "num_classes", None)
        self.pinned = False
        if isinstance(data, ImageDataset):
            small = data.pixels.numel() * data.pixels.element_size() < self.GPU_DATA_LIMIT
            if device.type != "cpu" and small:  # keep small datasets on the GPU: no copy per step
                data = ImageDataset(data.name, data.pixels.to(device), data.labels.to(device), data.num_classes)
            self.pinned = device.type == "cuda" and not small
            self.dataset = data
        elif isinstance(data, torch.Tensor):
            self.dataset = _Tensors(data.float().to(device), torch.zeros(len(data), dtype=torch.long, device=device))
        elif isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(v, torch.Tensor) for v in data):
            self.dataset = _Tensors(data[0].float().to(device), data[1].long().to(device))
        elif hasattr(data, "__len__") and hasattr(data, "__getitem__"):
            self.dataset = data
        else:
            raise TypeError("data must be an ImageDataset, a tensor of examples, an (x, y) pair of tensors, or a "
                            f"dataset that returns (x, y) for a tensor of indices; got {type(data).__name__}")
        self.storage = getattr(getattr(self.dataset, "pixels", None), "device", None) or getattr(
            getattr(self.dataset, "x", None), "device", torch.device("cpu"))
        x, _ = self.get(torch.zeros(1, dtype=torch.long))
        self.sample_shape = tuple(x.shape[1:])

    def __len__(self) -> int:
        return len(self.dataset)

    def get(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.dataset[indices.to(self.storage)]
        if self.pinned:  # page-locked: the copies below run asynchronously
            x, y = x.pin_memory(), y.pin_memory()
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


class _Tensors:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, index):
        return self.x[index], self.y[index]


# --------------------------------------------------------------------------- objectives


def min_snr_weights(alphas_cumprod, gamma: float, mean_type: str = "eps") -> torch.Tensor:
    """Min-SNR-gamma loss weights per timestep (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR
    Weighting Strategy"): the x_0-space loss weighted by min(SNR(t), gamma), with SNR(t) = alpha_bar_t /
    (1 - alpha_bar_t). For an eps-predicting model ||eps - eps_hat||^2 = SNR(t) ||x_0 - x_0_hat||^2, so the weight
    of its mse is min(SNR, gamma) / SNR (1 where SNR = 0); for an x_0-predicting model it is min(SNR, gamma).
    Computed in float64, returned as float32 of shape (T,)."""
    if not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma > 0):
        raise ValueError(f"min_snr_gamma must be a positive number, got {gamma!r}")
    abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
    snr = abar / (1 - abar)
    clipped = snr.clamp(max=gamma)
    if mean_type == "eps":
        weight = torch.where(snr > 0, clipped / snr, torch.ones_like(snr))
    elif mean_type == "x0":
        weight = clipped
    else:
        raise ValueError(f"min_snr_gamma is defined for mean_type 'eps' or 'x0', not {mean_type!r}")
    return weight.float()


class DiffusionObjective:
    """``mean(weights * training_losses(model, x_0, t)["loss"])``; logs the weighted means of the terms."""

    name = "diffusion"

    def __init__(self, diffusion: GaussianDiffusion, class_cond: bool = False, num_classes: int | None = None,
                 label_dropout: float = 0.0, min_snr_gamma: float | None = None):
        if class_cond and num_classes is None:
            raise ValueError("a class-conditional objective needs num_classes (the null label's index)")
        self.diffusion, self.class_cond = diffusion, class_cond
        self.num_classes, self.label_dropout = num_classes, label_dropout
        self.snr_weight = None
        if min_snr_gamma is not None:
            if diffusion.loss_type not in ("simple", "rescaled_mse"):
                raise ValueError(f"min_snr_gamma weights the mse term, and loss_type {diffusion.loss_type!r} has "
                                 "none: use loss_type 'simple' or 'rescaled_mse', or min_snr_gamma=None")
            self.snr_weight = min_snr_weights(diffusion.alphas_cumprod, min_snr_gamma, diffusion.mean_type)

    def __call__(self, model, x, y, t, weights, draw):
        """``draw(kind, shape)`` gives this process's slice of a global draw (kind "noise" or "uniform")."""
        kwargs = {}
        if self.class_cond:
            if self.label_dropout > 0:
                y = torch.where(draw("uniform", y.shape) < self.label_dropout, self.num_classes, y)
            kwargs["y"] = y
        terms = self.diffusion.training_losses(model, x, t, noise=draw("noise", x.shape), model_kwargs=kwargs)
        if self.snr_weight is not None:  # the mse term only: the vb term trains the variance
            if self.snr_weight.device != t.device:
                self.snr_weight = self.snr_weight.to(t.device)
            terms["mse"] = terms["mse"] * self.snr_weight[t]
            terms["loss"] = terms["mse"] + terms["vb"] if "vb" in terms else terms["mse"]
        logs = {key: (terms[key] * weights).mean() for key in ("mse", "vb") if key in terms}
        loss = (terms["loss"] * weights).mean()
        return loss, terms["loss"], {"loss": loss, **logs}


class ClassifierObjective:
    """The noisy classifier: cross-entropy of ``model(q_sample(x_0, t), t)`` against the labels (weighted by
    the sampler's weights); logs the accuracy on the noisy batch too."""

    name = "classifier"

    def __init__(self, diffusion: GaussianDiffusion):
        self.diffusion = diffusion

    def __call__(self, model, x, y, t, weights, draw):
        x_t = self.diffusion.q_sample(x, t, noise=draw("noise", x.shape))
        logits = model(x_t, t)
        ce = F.cross_entropy(logits.float(), y, reduction="none")
        loss = (ce * weights).mean()
        accuracy = (logits.detach().argmax(dim=1) == y).float().mean()
        return loss, ce, {"loss": loss, "accuracy": accuracy}


# --------------------------------------------------------------------------- distributed


def init_distributed(device: str | torch.device | None = None) -> tuple[int, int]:
    """(rank, world_size). When torchrun set ``WORLD_SIZE > 1``, initialise the default process group from the
    environment unless it already is: NCCL for CUDA (``device`` None or a CUDA device, and CUDA available),
    else gloo."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    use_cuda = _wants_cuda(device)
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return dist.get_rank(), dist.get_world_size()


def close_distributed() -> None:
    """Tear down the process group (if any); call once at the end of a torchrun script. All processes meet at a
    barrier first, so none tears its connections down while another still uses them (gloo aborts then)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _wants_cuda(device) -> bool:
    if device is not None:
        return torch.device(device).type == "cuda" and torch.cuda.is_available()
    return default_device().type == "cuda"


def _distributed_device(device) -> torch.device:
    """This process's device under torchrun: its GPU (LOCAL_RANK) for CUDA, else the CPU."""
    if _wants_cuda(device):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


# --------------------------------------------------------------------------- the run's config


def _sampler_name(sampler: ScheduleSampler) -> str:
    """The config name of a timestep sampler object (its class decides)."""
    for cls, name in ((LossSecondMomentResampler, "loss-second-moment"), (UniformSampler, "uniform")):
        if isinstance(sampler, cls):
            return name
    raise ConfigError(f"cannot record the timestep sampler {type(sampler).__name__} in a config: use "
                      "'uniform', 'loss-second-moment' or an instance of UniformSampler / LossSecondMomentResampler")


def _config_for(base: ExperimentConfig | None, spec, diffusion_config: DiffusionConfig | None, data_name,
                hyper: dict) -> ExperimentConfig:
    """The config of a Trainer: ``base`` (or the defaults, for a Trainer built by hand) with the model and
    diffusion it really trains and the hyper-parameters given to it. Refuses a model that does not fit the
    task the config describes (a variance output without a learned variance, labels without class_cond)."""
    kind, architecture = spec if spec is not None else (None, None)
    if base is None:
        known = data_name in IMAGE_DATASETS + TOY_DATASETS
        d = ExperimentConfig(model_kind=None, model=None, data=None).to_dict()
        d["data"] = data_name if known else None
    else:
        d = base.to_dict()
    d.update(model_kind=kind, model=_plain(architecture),
             diffusion=diffusion_config.to_dict() if diffusion_config is not None else None,
             **{k: _plain(v) for k, v in hyper.items()})
    config = ExperimentConfig.from_dict(d)
    if architecture is not None and config.model != architecture:
        diffs = [f"{f.name}: the model has {getattr(architecture, f.name)!r}, the task needs "
                 f"{getattr(config.model, f.name)!r}" for f in dataclasses.fields(architecture)
                 if getattr(architecture, f.name) != getattr(config.model, f.name)]
        raise ConfigError(f"the {kind} model does not fit this training task ({'; '.join(diffs)}): build it for "
                          "the diffusion's var_type (learn_sigma) and for class_cond (num_classes)")
    return config


# --------------------------------------------------------------------------- trainer


class Trainer:
    """Train a denoiser (or the noisy classifier) with AdamW, EMA, gradient clipping and mixed precision.

    Args:
        model: the network; ``model(x_t, t)`` or ``model(x_t, t, y=labels)``.
        diffusion: a :class:`~ddpm_lite.GaussianDiffusion` or a :class:`~ddpm_lite.configs.DiffusionConfig`.
        data: an :class:`~ddpm_lite.data.ImageDataset`, a tensor of examples (e.g. 2-D points), an (x, y) pair,
            or a dataset name ("digits", "moons", ...).
        objective: "diffusion" or "classifier"; by default "classifier" for an ``EncoderUNetModel``.
        batch_size: the global batch (split across processes under torchrun).
        lr, weight_decay: AdamW's. ema_decay: the EMA's decay (warmed up as ``(1 + step) / (10 + step)``).
        lr_warmup: linear learning-rate warm-up over this many steps, ``lr * min(1, (step + 1) / lr_warmup)``, a
            function of the step alone (so a resumed run continues it exactly); 0: none.
        min_snr_gamma: weight the mse term by Min-SNR-gamma (:func:`min_snr_weights`); None: unweighted.
        grad_clip: clip the gradient norm to this (None: no clipping).
        schedule_sampler: "uniform", "loss-second-moment" (Improved DDPM's importance sampling of t) or a
            :class:`~ddpm_lite.resample.ScheduleSampler`.
        class_cond: pass the labels to the model as ``y`` (default: when the model has ``num_classes``).
        label_dropout: probability of replacing a label by the null label ``num_classes``.
        seed: seeds the data stream, t and the noise.
        device: default :func:`ddpm_lite.runtime.default_device` (under torchrun: this process's GPU, or CPU).
        mixed_precision: "auto" (bf16 autocast on GPUs with native bf16, Ampere and later; fp16 with a GradScaler
            on older ones such as the T4; fp32 off CUDA), "fp32", "bf16" or "fp16" (the one used: ``precision``).
        channels_last: train in the NHWC memory format (None: on CUDA with autocast; see
            :func:`~ddpm_lite.configs.resolve_channels_last`; the one used: ``memory_format``).
        torch_compile: ``torch.compile`` the training forward (its compile time pays back only on long runs).
        checkpoint_path: where :meth:`save` writes; with ``save_every`` also every that many steps, at the end
            of :meth:`train` and when it is interrupted (Ctrl-C, the notebook's stop button).
        keep_previous: keep the replaced checkpoint as ``<name>.prev.pt``.
        callbacks: functions ``fn(trainer, step, logs)`` called after each step (see :func:`every`); raise
            :class:`StopTraining` to stop. ``every(500, log_variance_fit(test_images))`` (from
            :mod:`ddpm_lite.metrics.variance`) logs whether a learned variance is trained: the model's v(t)
            against the v*(t) its loss asks for.
        progress: show a tqdm progress bar with the loss (rank 0 only).
        config: the :class:`~ddpm_lite.configs.ExperimentConfig` (or dict) to store in checkpoints; built from
            the arguments when omitted.

    Attributes: ``step``, ``seconds`` and ``timed_steps`` (wall-clock time spent in :meth:`train` and the steps
    it took; :meth:`clock` says both), ``model`` (the raw module), ``ema`` (the averaged copy, for sampling),
    ``diffusion``, ``optimizer``, ``sampler``, ``history`` ({"loss": [...], "mse": [...], ...}, one float per step),
    ``loss_history`` (= ``history["loss"]``), ``logs`` (the last step's), ``rank``, ``world_size``.
    """

    def __init__(self, model: torch.nn.Module, diffusion, data, *, config: ExperimentConfig | dict | None = None,
                 objective: str | None = None, num_classes: int | None = None,
                 device: str | torch.device | None = None, checkpoint_path: str | os.PathLike | None = None,
                 keep_previous: bool = True, callbacks: Iterable[Callback] = (), progress: bool = True, **hyper):
        unknown = sorted(set(hyper) - set(TRAINING_FIELDS))
        if unknown:
            raise TypeError(f"Trainer got unknown arguments {unknown}; its hyper-parameters are "
                            f"{', '.join(TRAINING_FIELDS)}")
        self.rank, self.world_size = init_distributed(device)
        if self.world_size > 1:
            device = _distributed_device(device)
        else:
            device = torch.device(device) if device is not None else default_device()
        self.device = device

        # ---- what to optimise
        sampler = hyper.pop("schedule_sampler", None)
        if isinstance(sampler, str):
            hyper["schedule_sampler"] = sampler
        elif sampler is not None:
            hyper["schedule_sampler"] = _sampler_name(sampler)
        if isinstance(diffusion, DiffusionConfig):
            diffusion_config, diffusion = diffusion, diffusion.build()
        else:
            diffusion_config = DiffusionConfig.from_diffusion(diffusion)
        self.diffusion = diffusion
        spec = model_spec(model)
        if objective is None:
            objective = "classifier" if spec is not None and spec[0] == "classifier" else "diffusion"
        if objective not in ("diffusion", "classifier"):
            raise ValueError(f"unknown objective {objective!r}: choose 'diffusion' or 'classifier'")
        base = ExperimentConfig.from_dict(config) if isinstance(config, dict) else config
        if isinstance(data, str):
            data = load_data(data, seed=hyper.get("seed", base.seed if base is not None else 0))
        self.source = _Source(data, device)
        model_classes = getattr(model, "num_classes", None)
        if base is None and "class_cond" not in hyper:
            hyper["class_cond"] = objective == "diffusion" and model_classes is not None
        self.config = _config_for(base, spec, diffusion_config, self.source.name, hyper)
        self.num_classes = num_classes or model_classes or self.source.num_classes
        if objective == "classifier":
            self.objective = ClassifierObjective(diffusion)
        else:
            self.objective = DiffusionObjective(diffusion, self.class_cond, self.num_classes, self.label_dropout,
                                                self.min_snr_gamma)

        # ---- the run
        if self.batch_size % self.world_size:
            raise ValueError(f"batch_size {self.batch_size} must divide by the number of processes {self.world_size}")
        if self.batch_size > len(self.source):
            raise ValueError(f"batch_size {self.batch_size} is larger than the dataset ({len(self.source)} examples)")
        self.local_batch_size = self.batch_size // self.world_size
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self.keep_previous = keep_previous
        self.callbacks = list(callbacks)
        self.progress = progress

        # ---- modules, optimiser, sampler
        self.precision = resolve_precision(self.mixed_precision, device)
        self.memory_format = torch.channels_last if resolve_channels_last(
            self.config.channels_last, device, self.precision) else torch.contiguous_format
        self.model = model.to(device, memory_format=self.memory_format)
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self._params = [p for p in self.model.parameters()]
        self._ema_params = [p for p in self.ema.parameters()]
        self._buffers = list(zip(self.ema.buffers(), self.model.buffers()))
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [device.index] if device.type == "cuda" else None
            self._net = DistributedDataParallel(self.model, device_ids=device_ids)
        else:
            self._net = self.model
        if self.config.torch_compile:  # the training forward only; the EMA samples uncompiled
            self._net = torch.compile(self._net)
        # fused kernels on CUDA; elsewhere the multi-tensor (foreach) version, faster than one op per tensor
        fast = {"fused": True} if device.type == "cuda" else {"foreach": True}
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay, **fast)
        if sampler is None or isinstance(sampler, str):
            sampler = create_named_schedule_sampler(self.config.schedule_sampler, diffusion.num_timesteps)
        self.sampler = sampler
        self._learning_sampler = type(sampler).update_with_local_losses is not \
            ScheduleSampler.update_with_local_losses
        self._autocast_dtype, self.scaler = self._precision(self.mixed_precision)

        # ---- random streams: t (CPU) and noise / label dropout (on the device), the same on every process
        self._t_generator = torch.Generator().manual_seed(self.seed)
        self._noise_generator = torch.Generator(device=device).manual_seed(self.seed + 0x9E3779B9)

        self.step = 0
        self.seconds, self.timed_steps = 0.0, 0  # wall-clock time of train() and the steps it took in it
        self.history: dict[str, list[float]] = {"loss": []}
        self.logs: dict[str, float] = {}
        self._pending_save = False
        self._interrupt_requested = self._stop_agreed = False

    def __getattr__(self, name: str):
        """The hyper-parameters (``trainer.lr``, ``trainer.batch_size``, ...) are read from :attr:`config`."""
        if name in TRAINING_FIELDS and "config" in self.__dict__:
            return getattr(self.__dict__["config"], name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ---------------------------------------------------------------- construction from configs and files
    @classmethod
    def from_config(cls, config: ExperimentConfig | dict, data=None, *, model: torch.nn.Module | None = None,
                    device=None, root=None, download: bool = False, **kwargs) -> Trainer:
        """Build the model, diffusion and data of ``config`` (seeded by ``config.seed``) and a Trainer for them.

        ``kwargs`` go to :class:`Trainer` and override the config's hyper-parameters (``lr=``, ``callbacks=``,
        ``checkpoint_path=``...). ``data`` defaults to the config's dataset (train split). ``model`` trains another
        network in place of the config's, with everything else the same (a like-for-like comparison of
        architectures); checkpoints record its own architecture, or ``model_kind`` None for a network from
        another library.
        """
        if isinstance(config, dict):
            config = ExperimentConfig.from_dict(config)
        rank, world_size = init_distributed(device)
        torch.manual_seed(config.seed)
        if model is None:
            model = config.build_model()
        if data is None:
            if world_size > 1 and rank > 0:
                dist.barrier()  # let rank 0 download (or check) the data first
            try:
                data = load_data(config.data, "train", root=root, download=download and rank == 0, seed=config.seed)
            finally:
                if world_size > 1 and rank == 0:
                    dist.barrier()
        torch.manual_seed(config.seed * 7919 + rank)  # model dropout: a different stream on each process
        kwargs.setdefault("objective", config.objective)
        return cls(model, config.build_diffusion(), data, device=device, config=config, **kwargs)

    @classmethod
    def resume(cls, path: str | os.PathLike, data=None, *, device=None, root=None, download: bool = False,
               **kwargs) -> Trainer:
        """A Trainer rebuilt from the config stored in a checkpoint, with its full state loaded: training
        continues exactly where it stopped. ``kwargs`` override hyper-parameters (as :meth:`from_config`);
        later saves go to ``path`` unless ``checkpoint_path`` is given."""
        path = resolve_path(path)
        state = load_checkpoint(path)
        try:
            config = ExperimentConfig.from_dict(state["config"])
            if config.model is None or config.diffusion is None:
                raise ConfigError("it records no buildable model or diffusion")
        except (ConfigError, TypeError, KeyError) as err:
            raise CheckpointError(f"{path} was saved by a Trainer built by hand ({err}): build the same model "
                                  "and Trainer, then call trainer.load(path)") from None
        check_fits_config(config, state.get("model"), "model", path)  # before anything is built for real
        kwargs.setdefault("checkpoint_path", path)
        trainer = cls.from_config(config, data, device=device, root=root, download=download, **kwargs)
        trainer.load_state(state, path)
        return trainer

    def __repr__(self) -> str:
        params = sum(p.numel() for p in self._params)
        return (f"Trainer({self.config.name}, {self.objective.name}, step {self.step}, "
                f"{type(self.model).__name__} with {params / 1e6:.2f}M parameters, batch {self.batch_size}, "
                f"lr {self.lr:g}, device {self.device}, world size {self.world_size})")

    @property
    def loss_history(self) -> list[float]:
        """The loss of each step (the weighted batch mean that was minimised)."""
        return self.history["loss"]

    @property
    def objective_name(self) -> str:
        return self.objective.name

    @property
    def is_main_process(self) -> bool:
        return self.rank == 0

    # ---------------------------------------------------------------- precision
    def _precision(self, mode: str):
        mode = resolve_precision(mode, self.device)  # auto: bf16 where native (Ampere+), fp16 on a T4, fp32 off CUDA
        if mode == "fp32":
            return None, None
        if mode == "bf16":
            return torch.bfloat16, None
        grad_scaler = getattr(torch.amp, "GradScaler", None)
        scaler = grad_scaler("cuda") if grad_scaler is not None else torch.cuda.amp.GradScaler()
        return torch.float16, scaler

    def _autocast(self):
        if self._autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self._autocast_dtype)

    # ---------------------------------------------------------------- one step
    def _slice(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1:
            return tensor
        lo = self.rank * self.local_batch_size
        return tensor[lo: lo + self.local_batch_size]

    def _draw(self, kind: str, shape) -> torch.Tensor:
        """This process's slice of a draw for the global batch: what a single process would draw."""
        shape = (self.batch_size, *tuple(shape)[1:])
        if kind == "noise":
            out = torch.randn(shape, generator=self._noise_generator, device=self.device)
        else:
            out = torch.rand(shape, generator=self._noise_generator, device=self.device)
        return self._slice(out)

    def _batch(self, step: int):
        indices = self._slice(batch_indices(len(self.source), self.batch_size, step, self.seed))
        x, y = self.source.get(indices)
        if self.memory_format is torch.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def _run_step(self) -> dict[str, float]:
        step = self.step
        rng_before = self._rng_state() if self._pending_save else None  # before this step draws anything
        x, y = self._batch(step)
        t, weights = self.sampler.sample(self.batch_size, device="cpu", generator=self._t_generator)
        t_local = self._slice(t)
        t, weights = t_local.to(self.device, non_blocking=True), self._slice(weights).to(self.device, non_blocking=True)

        self.model.train()
        with self._autocast():
            loss, per_example, terms = self.objective(self._net, x, y, t, weights, self._draw)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        names = list(terms)
        values = [terms[k].detach().float() for k in names]
        if self.grad_clip is not None:
            names.append("grad_norm")
            values.append(torch.nn.utils.clip_grad_norm_(self._params, self.grad_clip).float())
        stacked = torch.stack(values)
        if self.world_size > 1:  # the mean over processes, and whether any process was asked to stop
            flag = torch.tensor([float(self._interrupt_requested)], device=stacked.device)
            stacked = torch.cat([stacked, flag])
            dist.all_reduce(stacked)
            numbers = stacked.tolist()
            numbers, self._stop_agreed = [v / self.world_size for v in numbers[:-1]], numbers[-1] > 0
        else:
            numbers = stacked.tolist()  # the one host sync of the step
        logs = dict(zip(names, numbers))
        self._check_finite(logs, x)

        if rng_before is not None:  # the pending save: these weights just gave a finite loss
            self._pending_save = False
            self.save(rng=rng_before)
        if self._learning_sampler:
            self.sampler.update_with_local_losses(t, per_example.detach())
        if self.lr_warmup:  # linear warm-up: lr * (step + 1) / lr_warmup for the first lr_warmup steps
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr * min(1.0, (step + 1) / self.lr_warmup)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skips the step when fp16 gradients overflowed
            self.scaler.update()
        else:
            self.optimizer.step()
        self._update_ema(step)
        self.step = step + 1
        for key, value in logs.items():
            self.history.setdefault(key, [math.nan] * step).append(value)
        logs["step"] = self.step
        self.logs = logs
        return logs

    def _check_finite(self, logs: dict[str, float], x: torch.Tensor) -> None:
        for term in [k for k in logs if k not in ("loss", "grad_norm")] + ["loss", "grad_norm"]:
            value = logs.get(term)
            if value is None or math.isfinite(value):
                continue
            if term == "grad_norm" and self.scaler is not None:
                continue  # fp16 overflow: the GradScaler skips this step and lowers its scale
            lo, hi = x.min().item(), x.max().item()
            kept = (f"the last good checkpoint {self.checkpoint_path} was left as it is" if self.checkpoint_path
                    and self.checkpoint_path.exists() else "no checkpoint was written")
            what = "the gradient norm" if term == "grad_norm" else f"the {term} term" if term != "loss" else "the loss"
            hints = [f"lower the learning rate (lr={self.lr:g})"]
            hints.append("enable gradient clipping (grad_clip=1.0)" if self.grad_clip is None
                         else f"clip gradients harder (grad_clip={self.grad_clip:g})")
            if self._autocast_dtype is not None:
                hints.append("train in fp32 (mixed_precision='fp32')")
            hints.append(f"check the data range: this batch lies in [{lo:.3g}, {hi:.3g}], images should be in [-1, 1]")
            raise TrainingDivergedError(
                f"training diverged at step {self.step}: {what} is {value} (loss terms: "
                f"{', '.join(f'{k}={v:.4g}' for k, v in logs.items())}). The weights were not updated with it, and "
                f"{kept}. Try to: {'; '.join(hints)}.", self.step, term, value)

    @torch.no_grad()
    def _update_ema(self, step: int) -> None:
        decay = min(self.ema_decay, (1 + step) / (10 + step))
        if self._ema_params:
            torch._foreach_lerp_(self._ema_params, self._params, 1.0 - decay)
        for ema_buffer, buffer in self._buffers:
            ema_buffer.copy_(buffer)

    # ---------------------------------------------------------------- the loop
    def train(self, steps: int) -> dict[str, list[float]]:
        """Run ``steps`` more optimisation steps; returns :attr:`history`. Call again to continue.

        Saves to ``checkpoint_path`` (if set) every ``save_every`` steps, at the end, and on Ctrl-C before
        re-raising KeyboardInterrupt. A NaN/inf loss raises :class:`TrainingDivergedError` without saving.
        While it trains, the process that writes (rank 0) holds the lock of the checkpoint's folder
        (:func:`~ddpm_lite.checkpoint.run_lock`): a second trainer on the same folder is refused with
        :class:`~ddpm_lite.checkpoint.RunFolderLockedError` instead of overwriting this one's checkpoints.
        """
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        locked = self.checkpoint_path is not None and self.is_main_process
        with run_lock(self.checkpoint_path.parent) if locked else contextlib.nullcontext():
            return self._train(steps)

    def clock(self) -> str:
        """How long training took in this process: ``"300 steps in 41.2 s (137 ms per step)"`` (the steps
        :meth:`train` ran and the wall-clock seconds it spent on them, checkpoints and callbacks included)."""
        return steps_in(self.timed_steps, self.seconds)

    def _train(self, steps: int) -> dict[str, list[float]]:
        start, first = time.perf_counter(), self.step
        try:
            return self._train_loop(steps)
        finally:
            self.seconds += time.perf_counter() - start
            self.timed_steps += self.step - first

    def _train_loop(self, steps: int) -> dict[str, list[float]]:
        end = self.step + steps
        bar = tqdm(total=steps, desc="training" if self.objective.name == "diffusion" else "training classifier",
                   unit="step", dynamic_ncols=True, disable=not (self.progress and self.is_main_process))
        smooth = None
        self._interrupt_requested = self._stop_agreed = False
        mutating = False
        try:
            with self._catch_sigint():
                while self.step < end:
                    mutating = True
                    logs = self._run_step()
                    mutating = False
                    smooth = logs["loss"] if smooth is None else 0.98 * smooth + 0.02 * logs["loss"]
                    postfix = {"loss": f"{smooth:.4f}"}
                    if "accuracy" in logs:
                        postfix["acc"] = f"{logs['accuracy']:.2f}"
                    bar.set_postfix(postfix, refresh=False)
                    bar.update(1)
                    for callback in self.callbacks:
                        callback(self, self.step, logs)
                    if self._stop_agreed if self.world_size > 1 else self._interrupt_requested:
                        raise KeyboardInterrupt
                    if self.save_every and self.checkpoint_path and self.step % self.save_every == 0 \
                            and self.step < end:
                        self._pending_save = True  # written during the next step, once its loss is finite
        except StopTraining:
            pass
        except KeyboardInterrupt:
            bar.close()
            self._save_on_interrupt(mutating)
            raise
        finally:
            bar.close()
            self._pending_save = False
        if self.checkpoint_path is not None:
            self.save()
        if self.world_size > 1:
            dist.barrier()
        return self.history

    def _save_on_interrupt(self, mutating: bool) -> None:
        where = f"at step {self.step}"
        if self.checkpoint_path is None:
            self._say(f"training interrupted {where} (no checkpoint_path: nothing saved)")
            return
        agreed = self._stop_agreed if self.world_size > 1 else self._interrupt_requested
        if mutating and not agreed:
            # interrupted inside a step (a second Ctrl-C, or no signal handler): the state may be half-updated
            warnings.warn(f"training interrupted inside step {self.step}: not saving a possibly inconsistent "
                          f"state; the last checkpoint {self.checkpoint_path} is kept", stacklevel=3)
            return
        try:
            path = self.save(collective=agreed)
        except TrainingDivergedError as err:
            self._say(f"training interrupted {where}; not saved: {err}")
            return
        self._say(f"training interrupted {where}; checkpoint saved to {path}")

    @contextlib.contextmanager
    def _catch_sigint(self):
        """Turn the first Ctrl-C into a request to stop at the end of the current step; a second one
        interrupts at once. Only in the main thread (where Python delivers signals)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.getsignal(signal.SIGINT)
        if previous is not signal.default_int_handler and not callable(previous):
            yield  # SIGINT ignored or handled by C code: leave it alone
            return

        def handler(signum, frame):
            self._interrupt_requested = True
            signal.signal(signal.SIGINT, previous)

        signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _say(self, message: str) -> None:
        if self.is_main_process:
            tqdm.write(message)

    # ---------------------------------------------------------------- state
    def _rng_state(self, collective: bool = True) -> dict:
        torch_states = [torch.get_rng_state()]
        cuda_states = [torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None]
        if self.world_size > 1 and collective:
            gathered: list = [None] * self.world_size
            dist.all_gather_object(gathered, (torch_states[0], cuda_states[0]))
            torch_states = [g[0] for g in gathered]
            cuda_states = [g[1] for g in gathered]
        return {"t_generator": self._t_generator.get_state(), "noise_generator": self._noise_generator.get_state(),
                "torch": torch_states, "cuda": cuda_states}

    def state_dict(self, rng: dict | None = None, collective: bool = True) -> dict:
        """Everything a checkpoint holds (tensors and plain containers)."""
        return {
            "format": FORMAT, "version": VERSION, "step": self.step, "config": self.config.to_dict(),
            "model": self.model.state_dict(), "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "sampler": self.sampler.state_dict(),
            "rng": rng if rng is not None else self._rng_state(collective),
            "history": {k: torch.tensor(v, dtype=torch.float64) for k, v in self.history.items()},
            "world_size": self.world_size, "torch_version": str(torch.__version__),
        }

    def save(self, path: str | os.PathLike | None = None, *, rng: dict | None = None,
             collective: bool = True) -> Path | None:
        """Write a checkpoint atomically (to ``checkpoint_path`` by default); only rank 0 writes.

        Refuses (TrainingDivergedError) when a weight is NaN or infinite, so a good file is never replaced
        by a broken one. Under torchrun every process must call it (the RNG states are gathered).
        """
        path = Path(path) if path is not None else self.checkpoint_path
        if path is None:
            raise ValueError("no checkpoint path: pass one to save(path) or set checkpoint_path")
        self._check_weights_finite()
        state = self.state_dict(rng=rng, collective=collective and self.world_size > 1)
        if self.is_main_process:
            save_checkpoint(state, path, keep_previous=self.keep_previous)
        return path

    def _check_weights_finite(self) -> None:
        norms = torch._foreach_norm(self._params + self._ema_params) if self._params else []
        if norms and not torch.isfinite(torch.stack(norms)).all():
            raise TrainingDivergedError(
                f"not saving at step {self.step}: some weights are NaN or infinite (training diverged); the last "
                f"good checkpoint was left as it is. Lower the learning rate or enable gradient clipping.",
                self.step, "weights", math.nan)

    def load(self, path: str | os.PathLike) -> Trainer:
        """Load a checkpoint made with the same model and diffusion into this trainer (see :meth:`load_state`)."""
        path = resolve_path(path)
        self.load_state(load_checkpoint(path), path)
        return self

    def load_state(self, state: dict, path: str | os.PathLike = "the checkpoint") -> None:
        """Restore weights, EMA, optimizer, scaler, sampler, step, history and RNG states.

        Raises :class:`~ddpm_lite.checkpoint.CheckpointMismatchError` naming the settings that differ when the
        checkpoint comes from another model or diffusion. This trainer's lr and weight decay stay in force.
        """
        if state.get("exported") or state.get("optimizer") is None:
            raise CheckpointError(f"{path} is an exported sampling-only checkpoint (EMA weights, no optimizer "
                                  "state): it can be sampled from but not resumed; resume from the training "
                                  "checkpoint instead")
        check_compatible(state.get("config"), self.config.to_dict(), path)
        load_state_dict_checked(self.model, state["model"], "model", path)
        load_state_dict_checked(self.ema, state["ema"] if state.get("ema") is not None else state["model"], "EMA", path)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as err:
            raise CheckpointError(f"the optimizer state in {path} does not fit this model: {err}") from None
        for group in self.optimizer.param_groups:
            group["lr"], group["weight_decay"] = self.lr, self.weight_decay
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        sampler_state = state.get("sampler") or {}
        if sampler_state and self._learning_sampler:
            try:
                self.sampler.load_state_dict(sampler_state)
            except (ValueError, KeyError) as err:
                raise CheckpointError(f"the timestep sampler state in {path} does not fit: {err}") from None
        elif sampler_state:
            warnings.warn(f"{path} holds an importance-sampler state, but this trainer samples t uniformly: "
                          "the state is ignored", stacklevel=2)
        self.step = int(state["step"])
        self.history = {k: [float(v) for v in values.tolist()] for k, values in state.get("history", {}).items()}
        self.history.setdefault("loss", [])
        saved_seed = (state.get("config") or {}).get("seed")
        if saved_seed is not None and saved_seed != self.seed:
            warnings.warn(f"{path} was trained with seed {saved_seed}, this trainer uses seed {self.seed}: the data "
                          "stream continues differently", stacklevel=2)
        self._restore_rng(state.get("rng") or {}, state.get("world_size", 1))

    def _restore_rng(self, rng: dict, saved_world_size: int) -> None:
        if rng.get("t_generator") is not None:
            self._t_generator.set_state(rng["t_generator"])
        if rng.get("noise_generator") is not None and self._noise_generator.device.type == self.device.type:
            with contextlib.suppress(RuntimeError):  # saved on another kind of device
                self._noise_generator.set_state(rng["noise_generator"])
        torch_states, cuda_states = rng.get("torch") or [], rng.get("cuda") or []
        if self.rank < len(torch_states) and torch_states[self.rank] is not None \
                and (saved_world_size == self.world_size or self.world_size == 1):
            torch.set_rng_state(torch_states[self.rank])
            if self.device.type == "cuda" and self.rank < len(cuda_states) and cuda_states[self.rank] is not None:
                torch.cuda.set_rng_state(cuda_states[self.rank], self.device)
        else:
            torch.manual_seed(self.seed * 7919 + self.rank + self.step)

    # ---------------------------------------------------------------- sampling
    def sample(self, n: int, *, steps: int | None = 50, ddim: bool = False, eta: float = 0.0,
               y: torch.Tensor | int | None = None, seed: int | None = 0, use_ema: bool = True,
               progress: bool = False, clip_denoised: bool | None = None) -> torch.Tensor:
        """``n`` samples (on the CPU) from the EMA weights, with ``steps`` respaced steps. The fixed default
        ``seed`` draws the same noise every time, so a grid refreshed during training shows the model change.
        ``clip_denoised`` clips each predicted x_0 to [-1, 1]; by default only for images (C, H, W), whose pixels
        live there, and not for 2-D points or waveforms."""
        if self.objective.name != "diffusion":
            raise ValueError("this trainer trains a classifier: there is nothing to sample")
        model = self.ema if use_ema else self.model
        steps = min(steps, self.diffusion.num_timesteps) if steps else None
        if isinstance(y, int):
            y = torch.full((n,), y, dtype=torch.long)
        if y is None and self.class_cond:
            y = torch.arange(n) % self.num_classes
        generator = torch.Generator(device=self.device).manual_seed(seed) if seed is not None else None
        if clip_denoised is None:
            clip_denoised = len(self.source.sample_shape) == 3
        out = generate(model, self.diffusion, (n, *self.source.sample_shape), steps=steps, ddim=ddim, eta=eta, y=y,
                       generator=generator, device=self.device, progress=progress, clip_denoised=clip_denoised)
        return out.float().cpu()
