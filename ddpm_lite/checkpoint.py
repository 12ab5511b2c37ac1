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
import errno
import os
import re
import shlex
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import torch

from .files import atomic_write, naming

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


class RunFolderLockedError(CheckpointError):
    """Another process is training into the same run folder (it holds ``<folder>/.lock``)."""

    def __init__(self, message: str, pid: int | None = None):
        super().__init__(message)
        self.pid = pid


def previous_path(path: str | os.PathLike) -> Path:
    """``runs/x/checkpoint.pt`` -> ``runs/x/checkpoint.prev.pt``: the file a save replaced."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix or '.pt'}")


# --------------------------------------------------------------------------- writing


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike, keep_previous: bool = False) -> Path:
    """Write ``state`` to ``path`` atomically and durably (:func:`ddpm_lite.files.atomic_write`); returns the path.

    The bytes go to a temporary file beside ``path``, which is flushed, fsynced and renamed over ``path``. If
    anything fails (disk full, Ctrl-C, a crash), ``path`` still holds the previous checkpoint and the temporary
    file is removed (temporary files left by a killed process are removed by the next save to the same path).
    ``keep_previous=True`` keeps the replaced file as :func:`previous_path`.
    """
    path = Path(path)
    if path.parent.is_dir():
        _remove_stale_temporaries(path)

    def keep(target: Path) -> None:
        if keep_previous and target.is_file():
            _keep_previous(target)

    return atomic_write(path, lambda f: torch.save(state, f), durable=True, before_replace=keep)


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
        if err.errno in (errno.EINVAL, None):  # a seek inside a truncated zip archive
            raise CheckpointError(f"{path} is truncated or corrupt ({_short(err)}): not a readable ddpm_lite "
                                  f"checkpoint.{_fallback(path)}") from None
        raise CheckpointError(f"cannot read {path}: {err.strerror or err}") from None
    except Exception as err:  # zip reader, unpickler and EOF errors all mean a damaged or foreign file
        blocked = _blocked_global(str(err))
        if blocked is not None:
            raise CheckpointError(
                f"{path} is blocked by the safe loader (weights_only=True): it holds Python objects that are not "
                f"tensors or plain containers{blocked}; do not load it with weights_only=False unless you trust its "
                f"source") from None
        raise CheckpointError(f"{path} is truncated or corrupt ({_short(err)}): not a readable ddpm_lite "
                              f"checkpoint.{_fallback(path)}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        hint = ""
        if isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values()):
            hint = (" It looks like a bare state_dict: load it into the model it came from with "
                    "model.load_state_dict(torch.load(path, weights_only=True)), or, for OpenAI's improved-diffusion "
                    "and guided-diffusion releases, with ddpm_lite.pretrained.load_openai(path).")
        raise CheckpointError(f"{path} is not a ddpm_lite checkpoint (no format marker {FORMAT!r}).{hint}"
                              f"{_fallback(path)}")
    if state.get("version", 0) > VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {state['version']}, newer than this "
                              f"ddpm_lite reads ({VERSION}): upgrade ddpm_lite")
    return state


_BLOCKED_MARKERS = ("unsupported global", "not an allowed global", "whose module", "unrecognized function",
                    "can only create new object", "can only build", "persistent_load", "must be imported to load")
# torch's own advice (retry with weights_only=False, allowlist the global): never shown to the user
_TORCH_ADVICE = ("weights only load failed", "weights_only", "re-running", "add_safe_globals", "safe_globals",
                 "check the documentation", "please file an issue", "trusted source")


def _blocked_global(text: str) -> str | None:
    """None when the error is not a refusal of the safe unpickler; else ' (it refers to posix.system)' or ''."""
    lower = text.lower()
    if not any(marker in lower for marker in _BLOCKED_MARKERS):
        return None
    match = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"unrecognized function <?([^>\s]+(?: [\w.]+)?)", text)
    return f" (it refers to {match.group(1).rstrip('.')})" if match else ""


def _short(err: BaseException) -> str:
    """The first informative line of a loading error, without torch's advice about weights_only."""
    text = str(err)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    for line in text.splitlines():
        line = line.strip()
        if line and not any(advice in line.lower() for advice in _TORCH_ADVICE):
            return line[:200]
    return type(err).__name__


def _fallback(path: Path) -> str:
    """' The checkpoint before it is X ...' naming the files beside ``path`` that may hold a good checkpoint:
    ``<name>.prev.pt`` if it exists, else the other .pt files, newest first. Names only: nothing is read (an
    error message must not load more files, and they may be large or hostile too)."""
    prev = previous_path(path)
    if prev.is_file():
        return (f" The checkpoint before it is {prev} (not checked): use it instead, or copy it over {path.name} to "
                "resume from it.")
    with contextlib.suppress(OSError):
        others = sorted((p for p in path.parent.glob("*.pt") if p.is_file() and p != path),
                        key=lambda p: p.stat().st_mtime, reverse=True)
        if others:
            names = ", ".join(p.name for p in others[:3]) + (" ..." if len(others) > 3 else "")
            return (f" Other .pt files in {path.parent} (newest first, not checked): {names}; or retrain, or "
                    "restore the file from a copy.")
    return " No other checkpoint is beside it: retrain, or restore the file from a copy."


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


def _weights_dict(state: Any, what: str, path) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CheckpointError(f"the {what} weights in {path} are not a state_dict (a dict of tensors): the file is "
                              "damaged or was not written by ddpm_lite")
    return state


def _shape_differences(own: dict[str, tuple[int, ...]], state: dict[str, torch.Tensor]) -> list[str]:
    """What differs between a model's expected (name -> shape) and a state_dict, in a few readable parts."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)}, this model {tuple(own[k])}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k])]

    def first(items, sep=", "):
        return sep.join(items[:5]) + (" ..." if len(items) > 5 else "")

    parts = []
    if shapes:
        parts.append(f"shapes differ: {first(shapes, '; ')}")
    if missing:
        parts.append(f"missing from the checkpoint: {first(missing)}")
    if unexpected:
        parts.append(f"not in this model: {first(unexpected)}")
    return parts


def check_finite(state: dict[str, torch.Tensor], what: str, path: str | os.PathLike = "the checkpoint") -> None:
    """Raise :class:`CheckpointError` naming the file and the first tensor of ``state`` holding a NaN or an inf
    (such weights sample black images and train nothing)."""
    for name, tensor in state.items():
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(
                f"{path} holds non-finite {what} weights: {name} has {bad} NaN or infinite value(s) of "
                f"{tensor.numel()} (saved from a diverged or damaged run); use an earlier checkpoint or retrain")


def load_state_dict_checked(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str,
                            path: str | os.PathLike = "the checkpoint") -> None:
    """``module.load_state_dict(state)`` with a readable error naming the keys and shapes that differ, and a
    refusal of weights that are NaN or infinite."""
    state = _weights_dict(state, what, path)
    parts = _shape_differences({k: tuple(v.shape) for k, v in module.state_dict().items()}, state)
    if parts:
        raise CheckpointMismatchError(f"the {what} weights in {path} do not fit this model ({'; '.join(parts)}): "
                                      "it was made with another architecture")
    check_finite(state, what, path)
    module.load_state_dict(state)


def check_fits_config(config, state: dict[str, torch.Tensor], what: str,
                      path: str | os.PathLike = "the checkpoint") -> None:
    """Compare the parameter names and shapes that ``config`` builds with those of ``state`` WITHOUT allocating
    the model: it is built on the ``meta`` device (shapes only, no memory). A small file whose config asks for a
    huge model is refused here (:class:`CheckpointMismatchError`) before anything large is built."""
    state = _weights_dict(state, what, path)
    with torch.device("meta"):
        skeleton = config.build_model()
    parts = _shape_differences({k: tuple(v.shape) for k, v in skeleton.state_dict().items()}, state)
    if parts:
        raise CheckpointMismatchError(
            f"the {what} weights in {path} do not fit the model its config describes ({'; '.join(parts)}): the "
            "file is damaged or was edited; nothing was built")


# --------------------------------------------------------------------------- models for sampling


def export_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, half: bool = False) -> Path:
    """Write a sampling-only copy of a checkpoint: the config, the EMA weights (as float16 with ``half``), the
    step and the loss history; no optimizer, raw weights or RNG states (about a quarter of the size). It loads
    with :func:`load_model` and the CLI's sample/bpd, but cannot resume training.

    Refuses (:class:`CheckpointError`) to write over ``src`` itself or over any training checkpoint (a file
    with optimizer state): the export would destroy the state needed to resume."""
    src, dst = resolve_path(src), Path(dst)
    if dst.is_dir():
        raise CheckpointError(f"the export destination {dst} is a folder: give a file name, e.g. "
                              f"{dst / (src.stem + '.export.pt')}")
    state = load_checkpoint(src)
    _refuse_overwriting_training_state(src, dst)
    weights = state["ema"] if state.get("ema") is not None else state["model"]
    if half:
        weights = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    slim = {"format": FORMAT, "version": VERSION, "step": state["step"], "config": state["config"],
            "model": None, "ema": weights, "optimizer": None, "exported": True,
            "history": state.get("history", {}), "torch_version": str(state.get("torch_version"))}
    return save_checkpoint(slim, dst)


def _refuse_overwriting_training_state(src: Path, dst: Path) -> None:
    if not dst.exists():
        return
    suggestion = dst.with_name(f"{dst.stem}.export{dst.suffix or '.pt'}")
    same = False
    with contextlib.suppress(OSError):
        same = os.path.samefile(src, dst)
    if same or src.resolve() == dst.resolve():
        raise CheckpointError(f"refusing to export {src} onto itself: {dst} is the training checkpoint that still "
                              f"holds the optimizer state to resume from; write the export elsewhere, e.g. "
                              f"{suggestion}")
    try:  # mmap: reads the small pickle, not the tensor bytes
        other = torch.load(dst, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return  # not a readable checkpoint: nothing to protect
    if isinstance(other, dict) and other.get("format") == FORMAT and other.get("optimizer") is not None:
        raise CheckpointError(f"refusing to overwrite {dst}: it is a training checkpoint (step {other.get('step')}) "
                              f"that still holds the optimizer state to resume from; write the export elsewhere, "
                              f"e.g. {suggestion}")


def load_model(path: str | os.PathLike, ema: bool = True, device: str | torch.device | None = None):
    """(model, diffusion, config) from a checkpoint, the model in eval mode on ``device``.

    ``ema=True`` loads the exponential moving average of the weights (what to sample with); ``ema=False``
    the raw weights. ``config`` is the :class:`~ddpm_lite.configs.ExperimentConfig` stored in the file.
    The config is checked against the weights before the model is built (:func:`check_fits_config`), and
    NaN or infinite weights are refused (:func:`check_finite`).
    """
    from .configs import ConfigError, ExperimentConfig
    from .runtime import default_device

    path = resolve_path(path)
    state = load_checkpoint(path)
    try:
        config = ExperimentConfig.from_dict(state["config"])
    except (ConfigError, TypeError, KeyError) as err:
        raise CheckpointError(f"{path} holds no complete experiment config ({err}); it was saved "
                              "by a Trainer built by hand: rebuild that model and load state['ema'] into it") from None
    if config.model is None:
        raise CheckpointError(f"{path} records no buildable model (it was saved by a Trainer built by hand): "
                              "rebuild that model and load state['ema'] into it")
    use_ema = (ema or state.get("model") is None) and state.get("ema") is not None
    weights = state["ema"] if use_ema else state.get("model")
    what = "EMA" if use_ema else "model"
    check_fits_config(config, weights, what, path)
    check_finite(weights, what, path)
    model = config.build_model()
    load_state_dict_checked(model, weights, what, path)
    model.to(device if device is not None else default_device()).eval()
    return model, config.build_diffusion(), config


# --------------------------------------------------------------------------- the run folder's lock

LOCK_NAME = ".lock"
_held_locks: dict[tuple[str, int], list] = {}  # (folder, thread) -> [file descriptor, depth]
_held_guard = threading.Lock()


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike):
    """Hold an exclusive lock on the run folder ``folder`` (``fcntl.flock`` on ``<folder>/.lock``, which records
    this process's PID and command) for the duration of the ``with`` block; the file is removed at the end.

    A second process (or thread) asking for the same folder gets :class:`RunFolderLockedError` naming the
    holder's PID at once: two trainers never write one checkpoint. The operating system drops the lock when
    the holder exits, even when it crashes, so a crash leaves at most an unlocked ``.lock`` file, which the
    next run takes over. Re-entrant within a thread. Where ``fcntl`` does not exist (Windows) or the file
    system has no locks, it does nothing.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here; training still works
        yield None
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = (os.path.realpath(folder), threading.get_ident())
    with _held_guard:
        held = _held_locks.get(key)
        if held is not None:
            held[1] += 1
    if held is not None:
        try:
            yield folder / LOCK_NAME
        finally:
            with _held_guard:
                held[1] -= 1
        return
    lock = folder / LOCK_NAME
    fd = _acquire(fcntl, folder, lock)
    if fd is None:  # no locks on this file system: go on without one
        yield None
        return
    with _held_guard:
        _held_locks[key] = [fd, 1]
    try:
        yield lock
    finally:
        with _held_guard:
            del _held_locks[key]
        with contextlib.suppress(OSError):
            os.unlink(lock)  # removed while still locked, so no other process can hold a lock on a deleted file
        os.close(fd)  # closing the descriptor releases the lock


def _acquire(fcntl, folder: Path, lock: Path) -> int | None:
    """Open and lock ``lock`` without waiting; the locked descriptor, None where the file system has no locks."""
    for _ in range(100):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise naming(err, lock) from err
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise _locked_error(folder, lock) from None
                os.close(fd)  # ENOLCK, EOPNOTSUPP: this file system has no locks
                return None
            try:  # the holder we waited on may have removed the file: lock the one that is there now
                same = os.stat(lock).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            text = f"{os.getpid()}\n{_command_line()}\n"
            os.ftruncate(fd, 0)
            os.pwrite(fd, text.encode(), 0)
            return fd
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
    raise RunFolderLockedError(f"could not lock {lock}: it keeps being replaced by another process")


def _command_line() -> str:
    argv = [os.path.basename(sys.argv[0])] + sys.argv[1:] if sys.argv and sys.argv[0] else ["python"]
    if "ipykernel" in " ".join(argv):
        return "a notebook kernel (Trainer.train)"
    return shlex.join(argv)[:300]


def _locked_error(folder: Path, lock: Path) -> RunFolderLockedError:
    pid, command = None, ""
    with contextlib.suppress(OSError, ValueError):
        lines = lock.read_text().splitlines()
        pid = int(lines[0]) if lines else None
        command = lines[1] if len(lines) > 1 else ""
    who = f"process {pid}" if pid is not None else "another process"
    running = f" ({command})" if command else ""
    return RunFolderLockedError(
        f"{folder} is in use: {who}{running} is training into it and holds {lock}; wait for it to end or stop it "
        f"(kill {pid if pid is not None else 'PID'}), or train into another folder (--out)", pid)
