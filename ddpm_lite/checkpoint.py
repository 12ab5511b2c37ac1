"""Checkpoints: one file with everything needed to continue a run exactly, written atomically.

A checkpoint is a dict of tensors and plain containers (loadable with ``torch.load(..., weights_only=True)``):

==============  ==========================================================================================
``format``      ``"ddpm_lite.checkpoint"`` (and ``version``)
``step``        optimisation steps done
``config``      the experiment as a plain dict (:class:`~ddpm_lite.configs.ExperimentConfig` ``.to_dict()``)
``model``       the model's ``state_dict``; ``ema``: the exponential moving average used for sampling
``optimizer``   AdamW's state; ``scaler``: the fp16 GradScaler's (or None); ``sampler``: the timestep sampler's
``rng``         generator states (the data stream is a pure function of (seed, step), so it needs none)
``history``     per-step losses: ``{"loss": float64 tensor, "mse": ..., "vb": ...}``
==============  ==========================================================================================

:func:`save_checkpoint` writes a temporary file in the same folder, flushes and fsyncs it, then renames it over
the target with ``os.replace``: a crash leaves either the old file or the new one, never half of one. With
``keep_previous`` the file it replaces stays as ``<name>.prev.pt``, the fallback named when a file is damaged.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "ddpm_lite.checkpoint"
VERSION = 1
DEFAULT_NAME = "checkpoint.pt"
# the parts of the config that fix the architecture and the diffusion: these must match to load weights
ARCHITECTURE_KEYS = ("model_kind", "model", "diffusion", "class_cond")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or does not fit; the message says why and what to do."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint at the given path."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint was made with another model or diffusion configuration."""


def previous_path(path: str | os.PathLike) -> Path:
    """``runs/x/checkpoint.pt`` -> ``runs/x/checkpoint.prev.pt``: the file a save replaced."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix or '.pt'}")


# --------------------------------------------------------------------------- writing


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike, keep_previous: bool = False) -> Path:
    """Write ``state`` to ``path`` atomically; returns the path.

    The bytes go to a temporary file beside ``path`` (``.<name>.<random>.tmp``), which is flushed, fsynced and
    renamed over ``path``. If anything fails (disk full, Ctrl-C, a crash), ``path`` still holds the previous
    checkpoint and the temporary file is removed (temporary files left by a killed process are removed by the
    next save to the same path). ``keep_previous=True`` keeps the replaced file as :func:`previous_path`.
    """
    path = Path(path)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        if keep_previous and path.is_file():
            _keep_previous(path)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _keep_previous(path: Path) -> None:
    """Make ``previous_path(path)`` a copy of ``path`` (a hard link when the file system allows), atomically."""
    prev = previous_path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{prev.name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.unlink(tmp)
        try:
            os.link(path, tmp)
        except OSError:  # no hard links here (FAT, some network file systems): copy
            shutil.copyfile(path, tmp)
        os.replace(tmp, prev)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _remove_stale_temporaries(path: Path) -> None:
    for name in (path.name, previous_path(path).name):
        for stale in path.parent.glob(f".{name}.*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- reading


def resolve_path(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run folder holding ``checkpoint.pt``."""
    path = Path(path)
    if path.is_dir() and (path / DEFAULT_NAME).is_file():
        return path / DEFAULT_NAME
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)`` and check that it is one of ours.

    Raises :class:`CheckpointNotFoundError` when there is no file, and :class:`CheckpointError` when the file
    is truncated, corrupt or something else than a ddpm_lite checkpoint (naming a readable fallback if any).
    """
    path = resolve_path(path)
    if not path.exists():
        raise CheckpointNotFoundError(f"no checkpoint at {path}{_nearby(path)}")
    if path.is_dir():
        raise CheckpointNotFoundError(f"{path} is a folder without a {DEFAULT_NAME}{_nearby(path / DEFAULT_NAME)}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except OSError as err:
        raise CheckpointError(f"cannot read {path}: {err}") from None
    except Exception as err:  # zip reader, unpickler and EOF errors all mean a damaged or foreign file
        text = str(err)
        if "Unsupported global" in text:
            what = "holds Python objects other than tensors and plain containers (refused by weights_only=True)"
        else:
            detail = text.split("WeightsUnpickler error:")[-1].strip()
            detail = detail.splitlines()[0].strip() if detail else type(err).__name__
            what = f"is truncated or corrupt ({detail})"
        raise CheckpointError(f"{path} {what}: not a readable ddpm_lite checkpoint.{_fallback(path)}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        hint = ""
        if isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values()):
            hint = " It looks like a bare state_dict: load it with model.load_state_dict(torch.load(path))."
        raise CheckpointError(f"{path} is not a ddpm_lite checkpoint (no format marker {FORMAT!r}).{hint}"
                              f"{_fallback(path)}")
    if state.get("version", 0) > VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {state['version']}, newer than this "
                              f"ddpm_lite reads ({VERSION}): upgrade ddpm_lite")
    return state


def _fallback(path: Path) -> str:
    """' The last good one is X (step N).' for the first readable checkpoint beside ``path``."""
    candidates = [previous_path(path)]
    with contextlib.suppress(OSError):
        others = sorted((p for p in path.parent.glob("*.pt") if p.is_file() and p != path),
                        key=lambda p: p.stat().st_mtime, reverse=True)
        candidates += [p for p in others if p not in candidates]
    for candidate in candidates[:4]:
        if not candidate.is_file():
            continue
        try:
            state = torch.load(candidate, map_location="cpu", weights_only=True)
        except Exception:
            continue
        if isinstance(state, dict) and state.get("format") == FORMAT:
            return (f" The last good one is {candidate} (step {state.get('step')}): use it instead, or copy it "
                    f"over {path.name} to resume from it.")
    return " No readable checkpoint was found beside it: retrain, or restore the file from a copy."


def _nearby(path: Path) -> str:
    folder = path.parent
    if not folder.is_dir():
        return f" (the folder {folder} does not exist)"
    found = sorted(p.name for p in folder.glob("*.pt"))
    if found:
        return f"; checkpoints in {folder}: {', '.join(found[:5])}"
    return f" (no .pt files in {folder}); train one first, e.g. `ddpm-lite train --out {folder}`"


# --------------------------------------------------------------------------- compatibility


def config_differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """'key: checkpoint A, this model B' for every leaf that differs between two config dicts."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out = []
        for key in sorted(set(saved) | set(current), key=str):
            name = f"{prefix}{key}"
            if key not in saved:
                out.append(f"{name}: not in the checkpoint, this model {current[key]!r}")
            elif key not in current:
                out.append(f"{name}: checkpoint {saved[key]!r}, not in this model")
            else:
                out += config_differences(saved[key], current[key], f"{name}.")
        return out
    if isinstance(saved, (list, tuple)) and isinstance(current, (list, tuple)):
        saved, current = list(saved), list(current)
    if saved != current:
        return [f"{prefix.rstrip('.')}: checkpoint {saved!r}, this model {current!r}"]
    return []


def check_compatible(saved_config: dict | None, current_config: dict | None,
                     path: str | os.PathLike = "the checkpoint") -> None:
    """Raise :class:`CheckpointMismatchError` naming every architecture or diffusion setting that differs."""
    if not saved_config or not current_config:
        return
    diffs = []
    for key in ARCHITECTURE_KEYS:
        if saved_config.get(key) is None or current_config.get(key) is None:
            continue  # unknown on one side (a hand-built model): the state_dict check decides
        diffs += config_differences(saved_config[key], current_config[key], f"{key}.")
    if diffs:
        raise CheckpointMismatchError(
            f"{path} was made with another configuration ({'; '.join(diffs)}). Use the checkpoint's settings "
            f"(Trainer.resume(path) and load_model(path) read them from the file; on the command line, drop the "
            f"options that change them), or train into a new folder (--out, or --fresh to start over).")


def load_state_dict_checked(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str,
                            path: str | os.PathLike = "the checkpoint") -> None:
    """``module.load_state_dict(state)`` with a readable error naming the keys and shapes that differ."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)}, this model {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        def first(items, sep=", "):
            return sep.join(items[:5]) + (" ..." if len(items) > 5 else "")

        parts = []
        if shapes:
            parts.append(f"shapes differ: {first(shapes, '; ')}")
        if missing:
            parts.append(f"missing from the checkpoint: {first(missing)}")
        if unexpected:
            parts.append(f"not in this model: {first(unexpected)}")
        raise CheckpointMismatchError(f"the {what} weights in {path} do not fit this model ({'; '.join(parts)}): "
                                      "it was made with another architecture")
    module.load_state_dict(state)


# --------------------------------------------------------------------------- models for sampling


def export_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, half: bool = False) -> Path:
    """Write a sampling-only copy of a checkpoint: the config, the EMA weights (as float16 with ``half``), the
    step and the loss history; no optimizer, raw weights or RNG states (about a quarter of the size). It loads
    with :func:`load_model` and the CLI's sample/bpd, but cannot resume training."""
    state = load_checkpoint(src)
    weights = state["ema"] if state.get("ema") is not None else state["model"]
    if half:
        weights = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    slim = {"format": FORMAT, "version": VERSION, "step": state["step"], "config": state["config"],
            "model": None, "ema": weights, "optimizer": None, "exported": True,
            "history": state.get("history", {}), "torch_version": str(state.get("torch_version"))}
    return save_checkpoint(slim, dst)



def load_model(path: str | os.PathLike, ema: bool = True, device: str | torch.device | None = None):
    """(model, diffusion, config) from a checkpoint, the model in eval mode on ``device``.

    ``ema=True`` loads the exponential moving average of the weights (what to sample with); ``ema=False``
    the raw weights. ``config`` is the :class:`~ddpm_lite.configs.ExperimentConfig` stored in the file.
    """
    from .configs import ConfigError, ExperimentConfig
    from .runtime import default_device

    state = load_checkpoint(path)
    try:
        config = ExperimentConfig.from_dict(state["config"])
    except (ConfigError, TypeError, KeyError) as err:
        raise CheckpointError(f"{resolve_path(path)} holds no complete experiment config ({err}); it was saved "
                              "by a Trainer built by hand: rebuild that model and load state['ema'] into it") from None
    model = config.build_model()
    weights = state["ema"] if (ema or state.get("model") is None) and state.get("ema") is not None else state["model"]
    load_state_dict_checked(model, weights, "EMA" if ema else "model", resolve_path(path))
    model.to(device if device is not None else default_device()).eval()
    return model, config.build_diffusion(), config
