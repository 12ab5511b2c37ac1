"""The ``ddpm-lite`` command (also ``python -m ddpm_lite``): train, sample, bits/dim, evaluate, export.

    ddpm-lite train --preset digits --steps 2000 --out runs/digits      # resumes if runs/digits has a checkpoint
    ddpm-lite sample --checkpoint runs/digits/checkpoint.pt --num 64 --steps 50 --out samples.png
    ddpm-lite bpd --checkpoint runs/digits/checkpoint.pt --split test --num 64
    ddpm-lite evaluate --checkpoint runs/digits --num 360 --steps 50 --ddim --split test   # FID, sFID, IS, P, R
    torchrun --nproc_per_node 4 -m ddpm_lite train --preset digits --data cifar10 --download

Everything defaults to the embedded digits, so it runs offline. User errors (a missing checkpoint or dataset,
a bad option, an unavailable device, a folder that cannot be written, a full disk) print one line and exit with
status 2; set DDPM_LITE_DEBUG=1 for the traceback. Files are written atomically (a failed write leaves the previous
file), a run folder is locked while one process trains into it, and `export` never overwrites a training
checkpoint.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import math
import os
import re
import sys
import tempfile
from pathlib import Path

import torch

from .checkpoint import (
    DEFAULT_NAME,
    CheckpointError,
    check_fits_config,
    export_checkpoint,
    load_checkpoint,
    load_model,
    resolve_path,
    run_lock,
)
from .configs import ConfigError, ExperimentConfig, preset_names
from .data import IMAGE_DATASETS, TOY_DATASETS, DatasetNotFoundError
from .files import write_text_atomic
from .runtime import check_device, debug_mode

DATA_NAMES = list(IMAGE_DATASETS + TOY_DATASETS)


class UsageError(Exception):
    """A problem with the command line that deserves one line and exit status 2."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ddpm-lite", description="Train diffusion models and sample from them (DDPM, Improved DDPM, ADM).",
        epilog="Run `ddpm-lite COMMAND --help` for the options of each command.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    train = sub.add_parser(
        "train", help="train a model (resumes from OUT/checkpoint.pt if it exists)",
        description="Train a model and save OUT/checkpoint.pt every --save-every steps, at the end and on Ctrl-C. "
                    "Rerunning the same command resumes: --steps is the total to reach. Under torchrun the same "
                    "command trains on every process (DistributedDataParallel).",
        epilog=f"presets: {', '.join(preset_names())}. Example: ddpm-lite train --preset digits --steps 2000 "
               "--out runs/digits --set model.model_channels=32")
    train.add_argument("--preset", choices=preset_names(), default=None,
                       help="the experiment (default: the checkpoint's when resuming, else digits)")
    train.add_argument("--data", choices=DATA_NAMES, default=None,
                       help="dataset (default: the preset's); image presets take image data, 'toy' 2-D data")
    train.add_argument("--steps", type=int, default=None,
                       help="total optimisation steps to reach (default: the preset's)")
    train.add_argument("--out", type=Path, default=None, help="run folder (default: runs/PRESET)")
    train.add_argument("--seed", type=int, default=None, help="seed of the model, the data order and the noise")
    train.add_argument("--batch-size", type=_positive_int, default=None, help="global batch size")
    train.add_argument("--lr", type=float, default=None, help="AdamW learning rate")
    train.add_argument("--save-every", type=_positive_int, default=None, help="checkpoint every N steps")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="change any config field, e.g. --set model.model_channels=32 "
                            "--set diffusion.num_timesteps=500 --set schedule_sampler=loss-second-moment (repeatable)")
    train.add_argument("--fresh", action="store_true", help="start over even if OUT holds a checkpoint")
    _add_common(train, data_options=True)

    sample = sub.add_parser("sample", help="draw samples from a checkpoint into a PNG",
                            description="Sample with the EMA weights, respaced to --steps steps (Improved DDPM "
                                        "section 4), ancestral by default or DDIM with --ddim.")
    sample.add_argument("--checkpoint", type=Path, required=True, help="checkpoint file or run folder")
    sample.add_argument("--num", type=_positive_int, default=None,
                        help="number of samples (64; 2000 points for toy models)")
    sample.add_argument("--steps", type=_positive_int, default=None,
                        help="sampling steps (default 50, or the model's timesteps if fewer)")
    sample.add_argument("--ddim", action="store_true", help="DDIM sampling instead of ancestral")
    sample.add_argument("--eta", type=float, default=None,
                        help="DDIM noise in [0, 1]: 0 deterministic (default), 1 like DDPM; needs --ddim")
    sample.add_argument("--class", dest="label", type=int, default=None,
                        help="class label for a class-conditional model (default: one column per class)")
    sample.add_argument("--out", type=Path, default=Path("samples.png"), help="PNG to write (default samples.png)")
    sample.add_argument("--ncol", type=_positive_int, default=None, help="images per row of the grid")
    sample.add_argument("--scale", type=_positive_int, default=None,
                        help="pixel repetition of the PNG (default: 4 for 8x8 images, 2 for 16x16, else 1)")
    sample.add_argument("--seed", type=int, default=0, help="seed of the noise")
    sample.add_argument("--no-ema", action="store_true", help="use the raw weights instead of their EMA")
    _add_common(sample)

    bpd = sub.add_parser("bpd", help="evaluate the negative log-likelihood in bits/dim",
                         description="The variational bound of Improved DDPM (section 2.4) over every timestep, "
                                     "in bits per dimension, averaged over --num images of --split.")
    bpd.add_argument("--checkpoint", type=Path, required=True, help="checkpoint file or run folder")
    bpd.add_argument("--split", choices=["train", "test"], default="test", help="data split (default test)")
    bpd.add_argument("--num", type=_positive_int, default=64, help="number of images (default 64)")
    bpd.add_argument("--batch-size", type=_positive_int, default=64, help="images per batch (default 64)")
    bpd.add_argument("--data", choices=list(IMAGE_DATASETS), default=None,
                     help="dataset (default: the checkpoint's; must have the same image size)")
    bpd.add_argument("--seed", type=int, default=0, help="seed of the image subset and the noise")
    bpd.add_argument("--no-ema", action="store_true", help="use the raw weights instead of their EMA")
    _add_common(bpd, data_options=True)

    evaluate = sub.add_parser(
        "evaluate", help="FID, sFID, Inception Score, precision and recall of samples",
        description="The table of guided-diffusion's evaluator (Dhariwal & Nichol 2021): sample --num images from a "
                    "checkpoint (or read them with --samples) and compare them with a data split, in the feature "
                    "space of the shipped digits network (or Inception-v3). The last column is the real-data floor: "
                    "as many real images of the other split, against the same reference.",
        epilog="Example: ddpm-lite evaluate --checkpoint runs/digits --num 360 --steps 50 --ddim --split test")
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="checkpoint file or run folder to sample from")
    source.add_argument("--samples", type=Path,
                        help="images to evaluate instead: .npz (arr_0, NHWC uint8 as guided-diffusion's sampling "
                             "scripts write, or NCHW floats in [-1, 1]) or .pt (a tensor of either form)")
    evaluate.add_argument("--num", type=_positive_int, default=None,
                          help="samples to draw (default: as many as the reference split has images)")
    evaluate.add_argument("--steps", type=_positive_int, default=None,
                          help="sampling steps (default 50, or the model's timesteps if fewer)")
    evaluate.add_argument("--ddim", action="store_true", help="DDIM sampling instead of ancestral")
    evaluate.add_argument("--eta", type=float, default=None, help="DDIM noise in [0, 1] (default 0); needs --ddim")
    evaluate.add_argument("--split", choices=["train", "test"], default="test",
                          help="reference split (default test)")
    evaluate.add_argument("--data", choices=list(IMAGE_DATASETS), default=None,
                          help="reference dataset (default: the checkpoint's; digits with --samples)")
    evaluate.add_argument("--features", choices=["digits", "inception"], default=None,
                          help="feature network: the shipped digits network (default for digits data, offline) or "
                               "torchvision's Inception-v3 (default otherwise; its weights must be in the torch hub "
                               "cache, or add --download)")
    evaluate.add_argument("--split-size", type=_positive_int, default=5000,
                          help="images per split of the Inception Score (default 5000, as the reference)")
    evaluate.add_argument("--batch-size", type=_positive_int, default=256, help="images per batch (default 256)")
    evaluate.add_argument("--no-floor", action="store_true", help="skip the real-data column")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the noise and of the real-data subset")
    evaluate.add_argument("--no-ema", action="store_true", help="use the raw weights instead of their EMA")
    _add_common(evaluate, data_options=True)

    export = sub.add_parser("export", help="write a small sampling-only copy of a checkpoint",
                            description="Keep the config and the EMA weights only (no optimizer state): for "
                                        "shipping a model. The copy samples but cannot resume training.")
    export.add_argument("--checkpoint", type=Path, required=True, help="checkpoint file or run folder")
    export.add_argument("--out", type=Path, required=True, help="file to write")
    export.add_argument("--half", action="store_true", help="store the weights as float16 (half the size)")
    return parser


def _add_common(parser, data_options: bool = False) -> None:
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: the best available)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    if data_options:
        parser.add_argument("--root", type=Path, default=None,
                            help="folder of the torchvision datasets "
                                 "(default $DDPM_LITE_DATA or ~/.cache/ddpm_lite/data)")
        parser.add_argument("--download", action="store_true",
                            help="download MNIST / Fashion-MNIST / CIFAR-10 if they are missing (needs internet)")


# --------------------------------------------------------------------------- commands


def cmd_train(args) -> int:
    from .train import Trainer, close_distributed

    out = args.out
    if out is None:
        out = Path("runs") / (args.preset or "digits")
    path = out / DEFAULT_NAME
    device = check_device(args.device, "--device") if args.device is not None or "RANK" not in os.environ else None
    config, state, stamp = _train_config(args, path)  # every option is checked before the folder is touched
    # the process that writes holds the run folder until its last write (Trainer.train takes the same lock
    # again): a second `train --out` on this folder is refused before it writes anything
    with run_lock(out) if int(os.environ.get("RANK", "0")) == 0 else contextlib.nullcontext():
        if _stamp(path) != stamp:  # another run saved since we read it: continue from what is there now
            config, state, stamp = _train_config(args, path)
        total = args.steps if args.steps is not None else config.steps
        trainer = Trainer.from_config(config, device=device if device is not None else args.device, root=args.root,
                                      download=args.download, checkpoint_path=path, progress=not args.no_progress)
        if state is not None:
            trainer.load_state(state, path)
        main = trainer.is_main_process
        if main:
            write_text_atomic(out / "config.json", trainer.config.to_json(indent=2) + "\n")
            resumed = f"resuming at step {trainer.step}" if state is not None else "starting"
            print(f"{config.name}: {resumed}, training to step {total} on {trainer.device} "
                  f"(world size {trainer.world_size}); checkpoints in {path}", file=sys.stderr)
        try:
            trainer.train(max(0, total - trainer.step))
        except KeyboardInterrupt:
            return 130
        finally:
            close_distributed()
    if main:
        recent = trainer.loss_history[-100:]
        mean = sum(recent) / len(recent) if recent else float("nan")
        print(f"step {trainer.step}: loss {mean:.4f} (mean of the last {len(recent)} steps); checkpoint {path}")
    return 0


def _stamp(path: Path):
    """(inode, size, mtime) of a file, None if there is none: tells whether a checkpoint was replaced."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _train_config(args, path: Path):
    """(config, checkpoint state or None, stamp of the checkpoint) for `train`: the checkpoint's config when
    resuming without --preset (checked against its tensors without building the model), then the options."""
    config, state = None, None
    stamp = _stamp(path)
    if stamp is not None and not args.fresh:
        state = load_checkpoint(path)
        if state.get("exported") or state.get("optimizer") is None:
            raise CheckpointError(f"{path} is an exported sampling-only checkpoint (no optimizer state): it cannot "
                                  "be resumed; train into another folder (--out), or start over with --fresh")
        if args.preset is None:
            try:
                config = ExperimentConfig.from_dict(state["config"])
            except (ConfigError, TypeError, KeyError) as err:
                raise UsageError(f"{path} holds no complete experiment config ({err}); pass --preset") from None
            if config.model is not None:  # the file's config against its own tensors, before building anything
                check_fits_config(config, state.get("model"), "model", path)
    if config is None:
        config = ExperimentConfig.preset(args.preset or "digits")
    if args.data and args.data != config.data:
        config = config.with_data(args.data)
    changes = {k: v for k, v in (("seed", args.seed), ("batch_size", args.batch_size), ("lr", args.lr),
                                  ("save_every", args.save_every)) if v is not None}
    config = config.override(changes) if changes else config
    if args.overrides:
        try:
            config = config.override(args.overrides)
        except ConfigError as err:
            raise UsageError(_set_error(args.overrides, err)) from None
    total = args.steps if args.steps is not None else config.steps
    if total < 0:
        raise UsageError(f"--steps must be >= 0, got {total}")
    return config, state, stamp


def _set_error(assignments: list[str], err: ConfigError) -> str:
    """'--set class_cond=abc: class_cond must be true or false, got 'abc'' (the assignment the error is about)."""
    message = str(err)
    keys = [(a, a.partition("=")[0].strip()) for a in assignments]
    named = [a for a, key in keys if key and key in message] or \
        [a for a, key in keys if key and re.search(rf"\b{re.escape(key.rsplit('.', 1)[-1])}\b", message)]
    return f"--set {named[-1]}: {message}" if named else f"--set: {message}"


def _check_output(path: Path) -> None:
    """Refuse an output that cannot be written, before any work is done: a folder, a name that is not .png, a
    parent that is a file or not writable (by creating and removing a temporary file beside it)."""
    if path.is_dir():
        raise UsageError(f"--out {path} is a folder: give a file name, e.g. {path / 'samples.png'}")
    if path.suffix.lower() != ".png":
        raise UsageError(f"--out {path}: the samples are written as a PNG; give a file name ending in .png")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path)) from err
    os.close(fd)
    os.unlink(tmp)


def cmd_sample(args) -> int:
    from .images import grid_size, save_image_grid, save_points
    from .sampling import generate

    if args.eta is not None and not args.ddim:
        raise UsageError(f"--eta {args.eta:g} sets DDIM's noise: add --ddim (ancestral sampling has no eta)")
    eta = 0.0 if args.eta is None else args.eta
    if not (math.isfinite(eta) and 0.0 <= eta <= 1.0):
        raise UsageError(f"--eta must be a finite number in [0, 1] (0: deterministic DDIM, 1: DDPM-like noise), "
                         f"got {args.eta}")
    device = check_device(args.device, "--device")
    _check_output(args.out)  # before loading and sampling: never compute samples that cannot be saved
    model, diffusion, config = load_model(args.checkpoint, ema=not args.no_ema, device=device)
    if config.objective == "classifier":
        raise UsageError(f"{resolve_path(args.checkpoint)} is a noisy classifier: there is nothing to sample "
                         "(it guides a diffusion model)")
    steps = args.steps or min(50, diffusion.num_timesteps)
    if steps > diffusion.num_timesteps:
        raise UsageError(f"--steps {steps} is more than the model's {diffusion.num_timesteps} timesteps")
    toy = config.model_kind == "mlp"
    n = args.num or (2000 if toy else 64)
    y, ncol = None, args.ncol
    if config.class_cond:
        k = config.num_classes
        if args.label is not None and not 0 <= args.label < k:
            raise UsageError(f"--class must lie in [0, {k - 1}] for this model, got {args.label}")
        y = torch.full((n,), args.label) if args.label is not None else torch.arange(n) % k
        ncol = ncol or (None if args.label is not None else k)
    elif args.label is not None:
        raise UsageError("--class needs a class-conditional model (e.g. --preset digits_cond); this one is "
                         "unconditional")
    shape = (n, *config.sample_shape)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    samples = generate(model, diffusion, shape, steps=steps, ddim=args.ddim, eta=eta, y=y,
                       generator=generator, device=device, progress=not args.no_progress).float().cpu()
    if not bool(torch.isfinite(samples).all()):
        bad = int((~torch.isfinite(samples)).sum())
        raise UsageError(f"sampling gave {bad} NaN or infinite values (the model's output is not finite): "
                         f"nothing was written to {args.out}")
    if toy:
        path = save_points(samples, args.out)
        print(f"wrote {n} points to {path}")
    else:
        size = config.model.image_size
        scale = args.scale or max(1, 32 // size)
        path = save_image_grid(samples, args.out, ncol=ncol, scale=scale)
        w, h = grid_size(n, size, size, ncol, scale=scale)
        print(f"wrote {n} samples ({w}x{h} grid, {steps} {'DDIM' if args.ddim else 'ancestral'} steps) to {path}")
    return 0


def cmd_bpd(args) -> int:
    from .data import load_dataset
    from .metrics import bits_per_dim

    device = check_device(args.device, "--device")
    model, diffusion, config = load_model(args.checkpoint, ema=not args.no_ema, device=device)
    if config.model_kind == "mlp" or config.objective == "classifier":
        raise UsageError("bits/dim needs a denoiser of images (the bound's decoder is over 8-bit pixels); this "
                         f"checkpoint is a {'classifier' if config.objective == 'classifier' else 'toy MLP'}")
    name = args.data or config.data
    dataset = load_dataset(name, args.split, root=args.root, download=args.download,
                           image_size=config.model.image_size)
    if dataset.image_shape[0] != config.model.in_channels:
        raise UsageError(f"{name} has {dataset.image_shape[0]} channels, the model takes {config.model.in_channels}")
    n = min(args.num, len(dataset))
    indices = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(args.seed))[:n]
    images, labels = dataset[indices]
    kwargs_fn = (lambda index: {"y": labels[index]}) if config.class_cond else None
    result = bits_per_dim(diffusion, model, images, batch_size=args.batch_size, model_kwargs_fn=kwargs_fn,
                          progress=not args.no_progress, device=device,
                          generator=torch.Generator(device=device).manual_seed(args.seed))
    print(f"{result['mean']:.4f} bits/dim (± {result['stderr']:.4f} standard error; {n} {args.split} images of "
          f"{name}, {diffusion.num_timesteps} timesteps, {'raw' if args.no_ema else 'EMA'} weights"
          f"{', conditional on the labels' if config.class_cond else ''})")
    return 0


def _read_samples(path: Path) -> torch.Tensor:
    """Images (N, C, H, W) as float32 in [-1, 1] from .npz or .pt: NHWC or NCHW, uint8 0..255 or floats in
    [-1, 1]; one UsageError naming what is accepted otherwise."""
    import numpy as np

    accepted = ("accepted: .npz with arr_0 (or a single array) or .pt holding a tensor (or a dict with one); "
                "images (N, H, W, C) or (N, C, H, W) with C = 1 or 3, uint8 0..255 or floats in [-1, 1]")
    suffix = path.suffix.lower()
    if not path.is_file():
        raise UsageError(f"--samples {path}: no such file")
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                keys = list(archive.keys())
                key = "arr_0" if "arr_0" in keys else (keys[0] if len(keys) == 1 else None)
                if key is None:
                    raise UsageError(f"--samples {path} holds arrays {keys} and no arr_0; {accepted}")
                array = torch.from_numpy(archive[key])
        elif suffix in (".pt", ".pth"):
            array = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(array, dict):
                tensors = {k: v for k, v in array.items() if isinstance(v, torch.Tensor)}
                key = next((k for k in ("samples", "images", "arr_0") if k in tensors), None)
                if key is None and len(tensors) == 1:
                    key = next(iter(tensors))
                if key is None:
                    raise UsageError(f"--samples {path} holds no tensor named samples, images or arr_0; {accepted}")
                array = tensors[key]
            elif isinstance(array, np.ndarray):
                array = torch.from_numpy(array)
        else:
            raise UsageError(f"--samples {path}: unknown file type {suffix or '(none)'}; {accepted}")
    except UsageError:
        raise
    except Exception as err:  # noqa: BLE001 - a truncated archive, a pickle the safe loader refuses: say which
        raise UsageError(f"--samples {path} cannot be read ({type(err).__name__}: {err}); {accepted}") from None
    if not isinstance(array, torch.Tensor) or array.ndim != 4:
        got = tuple(array.shape) if isinstance(array, torch.Tensor) else type(array).__name__
        raise UsageError(f"--samples {path} holds {got}, not a batch of images; {accepted}")
    if array.shape[1] not in (1, 3) and array.shape[-1] in (1, 3):
        array = array.permute(0, 3, 1, 2)  # NHWC (the reference's sample files) -> NCHW
    if array.shape[1] not in (1, 3):
        raise UsageError(f"--samples {path} holds images of shape {tuple(array.shape)}; {accepted}")
    if array.dtype == torch.uint8:
        return array.float() / 127.5 - 1
    if not array.is_floating_point():
        raise UsageError(f"--samples {path} holds {array.dtype} values; {accepted}")
    array = array.float().contiguous()
    if not bool(torch.isfinite(array).all()) or array.min() < -1.001 or array.max() > 1.001:
        raise UsageError(f"--samples {path}: float images must be finite and in [-1, 1], got values in "
                         f"[{array.min().item():.4g}, {array.max().item():.4g}]; {accepted}")
    return array.clamp(-1, 1)


def _draw_samples(args, model, diffusion, config, n: int, device) -> torch.Tensor:
    from .sampling import generate

    steps = args.steps or min(50, diffusion.num_timesteps)
    if steps > diffusion.num_timesteps:
        raise UsageError(f"--steps {steps} is more than the model's {diffusion.num_timesteps} timesteps")
    generator = torch.Generator(device=device).manual_seed(args.seed)
    eta = 0.0 if args.eta is None else args.eta
    out = []
    for start in range(0, n, args.batch_size):
        size = min(args.batch_size, n - start)
        y = torch.arange(start, start + size) % config.num_classes if config.class_cond else None
        out.append(generate(model, diffusion, (size, *config.sample_shape), steps=steps, ddim=args.ddim, eta=eta,
                            y=y, generator=generator, device=device, progress=not args.no_progress).float().cpu())
    samples = torch.cat(out)
    if not bool(torch.isfinite(samples).all()):
        raise UsageError("sampling gave NaN or infinite values (the model's output is not finite)")
    return samples.clamp(-1, 1)


def cmd_evaluate(args) -> int:
    from .data import load_dataset
    from .metrics import (
        InceptionV3Features,
        WeightsNotFoundError,
        evaluate_samples,
        evaluation_features,
        load_digits_feature_net,
    )

    if args.eta is not None and not args.ddim:
        raise UsageError(f"--eta {args.eta:g} sets DDIM's noise: add --ddim (ancestral sampling has no eta)")
    if args.eta is not None and not (math.isfinite(args.eta) and 0.0 <= args.eta <= 1.0):
        raise UsageError(f"--eta must be a finite number in [0, 1] (0: deterministic DDIM, 1: DDPM-like noise), "
                         f"got {args.eta}")
    device = check_device(args.device, "--device")
    model = diffusion = config = samples = None
    if args.checkpoint is not None:
        model, diffusion, config = load_model(args.checkpoint, ema=not args.no_ema, device=device)
        if config.objective == "classifier" or config.model_kind == "mlp":
            what = "a noisy classifier" if config.objective == "classifier" else "a toy 2-D model"
            raise UsageError(f"{resolve_path(args.checkpoint)} is {what}: evaluate needs a diffusion model of images")
        name, size, channels = args.data or config.data, config.model.image_size, config.model.in_channels
    else:
        for option in ("steps", "eta"):
            if getattr(args, option) is not None:
                raise UsageError(f"--{option} sets the sampler: it needs --checkpoint, not --samples")
        samples = _read_samples(args.samples)
        name, size, channels = args.data or "digits", samples.shape[-1], samples.shape[1]
    reference = load_dataset(name, args.split, root=args.root, download=args.download, image_size=size)
    if reference.image_shape[0] != channels:
        raise UsageError(f"{name} has {reference.image_shape[0]} channels, the samples have {channels}")
    kind = args.features or ("digits" if name in ("digits", "digits16") else "inception")
    if kind == "digits":
        if channels != 1:
            raise UsageError("the digits feature network takes one-channel images: use --features inception")
        net = load_digits_feature_net(device=device)
    else:
        try:
            net = InceptionV3Features(download=args.download, progress=not args.no_progress).to(device)
        except WeightsNotFoundError as err:
            raise UsageError(f"{err} (or evaluate digits with --features digits)") from None
    n = args.num or (len(samples) if samples is not None else len(reference))
    if samples is None:
        samples = _draw_samples(args, model, diffusion, config, n, device)
    elif args.num is not None:
        if args.num > len(samples):
            raise UsageError(f"--num {args.num} is more than the {len(samples)} images of {args.samples}")
        samples = samples[:args.num]
    if len(samples) < 4 or len(reference) < 4:
        raise UsageError(f"precision and recall need at least 4 images on each side (k = 3 neighbours); got "
                         f"{len(samples)} samples and {len(reference)} reference images")
    progress = not args.no_progress
    ref = evaluation_features(reference, net, args.batch_size, device, progress)
    result = evaluate_samples(samples, ref, net, split_size=args.split_size, batch_size=args.batch_size,
                              device=device, progress=progress)
    floor, label = None, ""
    if not args.no_floor:
        other = "train" if args.split == "test" else "test"
        try:
            real = load_dataset(name, other, root=args.root, download=args.download, image_size=size)
        except DatasetNotFoundError as err:
            print(f"no real-data column: {' '.join(str(err).split())}", file=sys.stderr)
        else:
            m = min(len(samples), len(real))
            pick = torch.randperm(len(real), generator=torch.Generator().manual_seed(args.seed))[:m]
            if m >= 4:
                floor = evaluate_samples(real[pick][0], ref, net, split_size=args.split_size,
                                         batch_size=args.batch_size, device=device, progress=progress)
                label = f"real {other}"
    if args.checkpoint is not None:
        steps = args.steps or min(50, diffusion.num_timesteps)
        source = (f"{len(samples)} samples of {resolve_path(args.checkpoint)} ({steps} "
                  f"{'DDIM' if args.ddim else 'ancestral'} steps)")
    else:
        source = f"{len(samples)} images of {args.samples}"
    print(f"{source} against the {len(reference)} {args.split} images of {name}, {kind} features")
    print(result.table(floor, label) if floor is not None else result.table())
    return 0


def cmd_export(args) -> int:
    path = export_checkpoint(resolve_path(args.checkpoint), args.out, half=args.half)
    size = path.stat().st_size / 2**20
    print(f"wrote {path} ({size:.1f} MiB, sampling only)")
    return 0


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "bpd": cmd_bpd, "evaluate": cmd_evaluate, "export": cmd_export}


def describe_os_error(err: OSError) -> str:
    """One line for a failed read or write: what happened to which file, and what to do."""
    name = err.filename if err.filename is not None else None
    target = f" {name}" if name else ""
    code = err.errno
    if code == errno.ENOSPC:
        line = f"disk full: no space left on the device to write{target}; free some space or write to another disk"
    elif code == getattr(errno, "EDQUOT", -1):
        line = f"disk quota exceeded while writing{target}; free some space or write to another disk"
    elif code in (errno.EACCES, errno.EPERM):
        line = f"permission denied:{target} (this user may not write or read it); choose another folder"
    elif code == errno.EROFS:
        line = f"{name or 'the file'} is on a read-only file system; choose another folder"
    elif code == errno.EISDIR:
        line = f"{name or 'the path'} is a folder, not a file: give a file name"
    elif code == errno.ENOTDIR:
        line = f"{name or 'the path'}: a part of this path is a file, not a folder"
    elif code == errno.EEXIST and name and not Path(name).is_dir():
        line = f"{name} exists and is not a folder"
    elif code == errno.ENOENT:
        line = f"no such file or folder:{target}"
    else:
        line = f"{err.strerror or type(err).__name__}:{target}" if err.strerror else (str(err) or type(err).__name__)
    if getattr(err, "filename2", None):
        line += f" (and {err.filename2})"
    return line


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ddpm-lite``; returns the exit status (0 ok, 2 user error, 130 interrupted)."""
    from .train import TrainingDivergedError

    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print(f"ddpm-lite {args.command}: interrupted", file=sys.stderr)
        return 130
    except (UsageError, CheckpointError, DatasetNotFoundError, ConfigError, TrainingDivergedError, ValueError,
            OSError) as err:
        if debug_mode():
            raise
        worded = (UsageError, CheckpointError, DatasetNotFoundError, ConfigError, TrainingDivergedError, ValueError)
        # OSErrors from reading or writing files (permissions, a full disk, a folder where a file is due) are
        # worded here; the package's own errors (some of them FileNotFoundErrors) carry their message
        message = str(err) if isinstance(err, worded) else describe_os_error(err)
        message = " ".join(message.split()) or type(err).__name__
        print(f"ddpm-lite {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
