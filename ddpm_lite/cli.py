"""The ``ddpm-lite`` command (also ``python -m ddpm_lite``): train, sample, bits/dim, export.

    ddpm-lite train --preset digits --steps 2000 --out runs/digits      # resumes if runs/digits has a checkpoint
    ddpm-lite sample --checkpoint runs/digits/checkpoint.pt --num 64 --steps 50 --out samples.png
    ddpm-lite bpd --checkpoint runs/digits/checkpoint.pt --split test --num 64
    torchrun --nproc_per_node 4 -m ddpm_lite train --preset digits --data cifar10 --download

Everything defaults to the embedded digits, so it runs offline. User errors (a missing checkpoint or dataset,
a bad option) print one line and exit with status 2; set DDPM_LITE_DEBUG=1 for the traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .checkpoint import DEFAULT_NAME, CheckpointError, export_checkpoint, load_checkpoint, load_model, resolve_path
from .configs import ConfigError, ExperimentConfig, preset_names
from .data import IMAGE_DATASETS, TOY_DATASETS, DatasetNotFoundError
from .runtime import debug_mode

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
    sample.add_argument("--eta", type=float, default=0.0, help="DDIM noise: 0 deterministic, 1 like DDPM")
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

    config = None
    out = args.out
    if out is None:
        out = Path("runs") / (args.preset or "digits")
    path = out / DEFAULT_NAME
    state = None
    if path.exists() and not args.fresh:
        state = load_checkpoint(path)
        if args.preset is None:
            try:
                config = ExperimentConfig.from_dict(state["config"])
            except (ConfigError, TypeError, KeyError) as err:
                raise UsageError(f"{path} holds no complete experiment config ({err}); pass --preset") from None
    if config is None:
        config = ExperimentConfig.preset(args.preset or "digits")
    if args.data and args.data != config.data:
        config = config.with_data(args.data)
    changes = {k: v for k, v in (("seed", args.seed), ("batch_size", args.batch_size), ("lr", args.lr),
                                  ("save_every", args.save_every)) if v is not None}
    config = config.override(changes) if changes else config
    config = config.override(args.overrides) if args.overrides else config
    total = args.steps if args.steps is not None else config.steps
    if total < 0:
        raise UsageError(f"--steps must be >= 0, got {total}")

    trainer = Trainer.from_config(config, device=args.device, root=args.root, download=args.download,
                                  checkpoint_path=path, progress=not args.no_progress)
    if state is not None:
        trainer.load_state(state, path)
    main = trainer.is_main_process
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(trainer.config.to_json(indent=2) + "\n")
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


def cmd_sample(args) -> int:
    from .images import grid_size, save_image_grid, save_points
    from .runtime import default_device
    from .sampling import generate

    device = torch.device(args.device) if args.device else default_device()
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
    samples = generate(model, diffusion, shape, steps=steps, ddim=args.ddim, eta=args.eta, y=y,
                       generator=generator, device=device, progress=not args.no_progress).float().cpu()
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
    from .runtime import default_device

    device = torch.device(args.device) if args.device else default_device()
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


def cmd_export(args) -> int:
    path = export_checkpoint(resolve_path(args.checkpoint), args.out, half=args.half)
    size = path.stat().st_size / 2**20
    print(f"wrote {path} ({size:.1f} MiB, sampling only)")
    return 0


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "bpd": cmd_bpd, "export": cmd_export}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ddpm-lite``; returns the exit status (0 ok, 2 user error, 130 interrupted)."""
    from .train import TrainingDivergedError

    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (UsageError, CheckpointError, DatasetNotFoundError, ConfigError, TrainingDivergedError, ValueError,
            FileNotFoundError) as err:
        if debug_mode():
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"ddpm-lite {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ddpm-lite {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
