"""Issue 12, "never lose work, never lie, one clear line": the command line and the library as a careless or a
hostile user would try them. Each test asserts what the user sees: one line on stderr without a traceback,
exit status 2, and the files left as they were."""
import ast
import errno
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ddpm_lite
from ddpm_lite import GaussianDiffusion, cli, get_betas
from ddpm_lite import checkpoint as ckpt
from ddpm_lite.checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    RunFolderLockedError,
    load_checkpoint,
    load_model,
    run_lock,
)
from ddpm_lite.configs import ExperimentConfig
from ddpm_lite.images import save_image_grid, save_points
from ddpm_lite.sampling import generate
from ddpm_lite.train import Trainer

REPO = Path(__file__).resolve().parents[1]
TINY = ["--set", "model.model_channels=16", "--set", "model.num_res_blocks=1", "--set", "model.num_head_channels=16",
        "--set", "diffusion.num_timesteps=20", "--batch-size", "16", "--no-progress"]
TINY_CONFIG = {"model.model_channels": 16, "model.num_res_blocks": 1, "model.num_head_channels": 16,
               "diffusion.num_timesteps": 20, "batch_size": 16}


def one_line_error(capsys, *fragments, trained: bool = False) -> str:
    """The single stderr line of a refused command, checked to contain every fragment (``trained``: after the
    line `train` prints when it starts)."""
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    if trained:
        assert " training to step " in lines[0], captured.err
        lines = lines[1:]
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    line = lines[0]
    assert line.startswith("ddpm-lite ") and ": error: " in line, line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


def temporaries(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny digits run trained for 2 steps (checkpoint.pt, config.json): copy it before changing it."""
    out = tmp_path_factory.mktemp("trained") / "run"
    assert cli.main(["train", "--preset", "digits", "--steps", "2", "--out", str(out), *TINY]) == 0
    return out


@pytest.fixture
def run(trained_run, tmp_path):
    """A private copy of the trained run folder."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


# --------------------------------------------------------------------------- 1. silent wrong results


@pytest.mark.parametrize("eta", ["nan", "1e9", "-1", "inf"])
def test_ddim_eta_outside_0_1_is_refused_before_sampling(run, tmp_path, capsys, eta):
    png = tmp_path / "samples.png"
    assert cli.main(["sample", "--checkpoint", str(run), "--ddim", "--eta", eta, "--out", str(png),
                     "--no-progress"]) == 2
    one_line_error(capsys, "--eta must be a finite number in [0, 1]")
    assert not png.exists()


def test_eta_without_ddim_is_refused(run, tmp_path, capsys):
    assert cli.main(["sample", "--checkpoint", str(run), "--eta", "0.5", "--out", str(tmp_path / "x.png")]) == 2
    one_line_error(capsys, "--eta 0.5", "--ddim")


@pytest.mark.parametrize("eta", [float("nan"), 1e9, -1.0, float("inf"), "0.5", None, True])
def test_library_refuses_bad_eta_at_the_call(eta):
    diffusion = GaussianDiffusion(get_betas("linear", 50))
    calls = []

    class Zero(torch.nn.Module):
        def forward(self, x, t):
            calls.append(1)
            return torch.zeros_like(x)

    model = Zero()

    for call in (lambda: generate(model, diffusion, (2, 2), steps=5, ddim=True, eta=eta),
                 lambda: diffusion.ddim_sample_loop(model, (2, 2), eta=eta),
                 lambda: diffusion.ddim_sample_loop_progressive(model, (2, 2), eta=eta),  # eager, not on next()
                 lambda: diffusion.ddim_sample(model, torch.zeros(2, 2), torch.tensor([3, 3]), eta=eta)):
        with pytest.raises(ValueError, match=r"eta must be a (finite )?number in \[0, 1\]"):
            call()
    assert calls == []  # refused before the model ran
    out = generate(model, diffusion, (2, 2), steps=5, ddim=True, eta=1.0)
    assert torch.isfinite(out).all() and calls
    with pytest.raises(ValueError, match="ddim=True"):
        generate(model, diffusion, (2, 2), steps=5, eta=0.5)


def _poison(run: Path, key_index: int = 3) -> tuple[Path, str]:
    """A copy of the run's checkpoint with a NaN and an inf in one tensor of both weight sets."""
    state = load_checkpoint(run / "checkpoint.pt")
    name = list(state["ema"])[key_index]
    for weights in (state["model"], state["ema"]):
        weights[name] = weights[name].clone()
        weights[name].view(-1)[0] = float("nan")
        weights[name].view(-1)[-1] = float("inf")
    path = run / "poisoned.pt"
    torch.save(state, path)
    return path, name


def test_non_finite_weights_are_refused_naming_the_file_and_tensor(run, tmp_path, capsys):
    path, name = _poison(run)
    with pytest.raises(CheckpointError, match="non-finite") as info:
        load_model(path, device="cpu")
    assert str(path) in str(info.value) and name in str(info.value)
    png = tmp_path / "black.png"
    assert cli.main(["sample", "--checkpoint", str(path), "--out", str(png), "--no-progress"]) == 2
    one_line_error(capsys, str(path), name, "NaN or infinite")
    assert not png.exists()
    config = ExperimentConfig.from_dict(load_checkpoint(path)["config"])
    trainer = Trainer.from_config(config, progress=False)
    with pytest.raises(CheckpointError, match=f"non-finite.*{name}"):
        trainer.load(path)


@pytest.mark.parametrize("setting, fragments", [
    (["--set", "class_cond=abc"], ["--set class_cond=abc", "class_cond must be true or false, got 'abc'"]),
    (["--preset", "toy", "--set", "model.hidden=0"], ["--set model.hidden=0", "hidden must be >= 1, got 0"]),
    (["--set", "model.model_channels=abc"], ["--set model.model_channels=abc", "must be an integer"]),
    (["--set", "lr=nan"], ["--set lr=nan", "lr must be a finite number"]),
    (["--lr", "nan"], ["lr must be a finite number"]),
])
def test_bad_config_values_give_one_line(tmp_path, capsys, setting, fragments):
    out = tmp_path / "run"
    assert cli.main(["train", "--out", str(out), "--steps", "1", "--no-progress", *setting]) == 2
    one_line_error(capsys, *fragments)
    assert not (out / "checkpoint.pt").exists() and not (out / "config.json").exists()


# --------------------------------------------------------------------------- 2. export never destroys a run


@pytest.mark.parametrize("target", ["same file", "run folder", "hard link", "symlink", "another training checkpoint"])
def test_export_refuses_to_overwrite_a_training_checkpoint(run, capsys, target):
    path = run / "checkpoint.pt"
    if target == "same file":
        source, out = str(path), path
    elif target == "run folder":
        source, out = str(run), path
    elif target == "hard link":
        source, out = str(path), run / "linked.pt"
        os.link(path, out)
    elif target == "symlink":
        source, out = str(path), run / "alias.pt"
        out.symlink_to(path)
    else:
        source, out = str(path), run / "other.pt"
        shutil.copyfile(path, out)
        torch.save(load_checkpoint(path), run / "source.pt")
        source = str(run / "source.pt")
    before = {p: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert cli.main(["export", "--checkpoint", source, "--out", str(out)]) == 2
    one_line_error(capsys, "refusing to", str(out), "optimizer state")
    assert {p: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert load_checkpoint(path)["optimizer"] is not None


def test_export_to_a_new_file_or_over_an_export_works(run, capsys):
    out = run / "small.pt"
    for _ in range(2):  # the second run replaces the first export: that is not a training checkpoint
        assert cli.main(["export", "--checkpoint", str(run), "--out", str(out), "--half"]) == 0
    assert load_checkpoint(out)["optimizer"] is None and "wrote" in capsys.readouterr().out


# --------------------------------------------------------------------------- 3. one trainer per run folder

HOLDER = """
import sys, time
from ddpm_lite.configs import ExperimentConfig
from ddpm_lite.train import Trainer
config = ExperimentConfig.preset("digits").override({tiny!r})
def hold(trainer, step, logs):
    print("training", flush=True)
    time.sleep(600)
trainer = Trainer.from_config(config, progress=False, checkpoint_path=sys.argv[1], callbacks=[hold])
trainer.train(5)
"""


def test_a_second_trainer_on_the_same_folder_is_refused_and_a_killed_one_leaves_no_lock(run, capsys):
    path = run / "checkpoint.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER.format(tiny=TINY_CONFIG), str(path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "training", holder.stderr.read()
        before, config_before = path.read_bytes(), (run / "config.json").read_bytes()
        lines = (run / ".lock").read_text().splitlines()
        assert lines[0] == str(holder.pid) and "-c" in lines[1]  # the PID and the command of the holder

        assert cli.main(["train", "--steps", "4", "--out", str(run), "--no-progress"]) == 2
        one_line_error(capsys, f"process {holder.pid}", str(run), "in use")
        config = ExperimentConfig.preset("digits").override(TINY_CONFIG)
        notebook = Trainer.from_config(config, progress=False, checkpoint_path=path)
        with pytest.raises(RunFolderLockedError) as info:
            notebook.train(1)
        assert info.value.pid == holder.pid and notebook.step == 0
        assert path.read_bytes() == before and temporaries(run) == []
        assert (run / "config.json").read_bytes() == config_before
    finally:
        holder.kill()  # a crash: no clean-up code runs
        holder.communicate(timeout=60)
    assert (run / ".lock").exists()  # left by the killed holder, but no longer locked: the next run takes it over
    assert cli.main(["train", "--steps", "3", "--out", str(run), "--no-progress"]) == 0
    assert load_checkpoint(path)["step"] == 3 and not (run / ".lock").exists()


def test_trainer_holds_the_lock_only_while_training(tmp_path):
    path = tmp_path / "run" / "checkpoint.pt"
    config = ExperimentConfig.preset("digits").override(TINY_CONFIG)
    seen = []

    def try_from_another_thread(trainer, step, logs):
        def attempt():
            try:
                with run_lock(path.parent):
                    seen.append("acquired")
            except RunFolderLockedError as err:
                seen.append(err.pid)

        thread = threading.Thread(target=attempt)
        thread.start()
        thread.join()

    trainer = Trainer.from_config(config, progress=False, checkpoint_path=path, callbacks=[try_from_another_thread])
    trainer.train(1)
    assert seen == [os.getpid()]
    with run_lock(path.parent):  # released at the end
        pass
    assert not (path.parent / ".lock").exists()  # the run folder holds no trace of the lock afterwards


# --------------------------------------------------------------------------- 4. one line for OS errors


def _enospc_midway(obj, f, *args, **kwargs):
    f.write(b"PK\x03\x04 half a file")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_while_training_says_so_and_keeps_the_checkpoint(run, capsys, monkeypatch):
    path = run / "checkpoint.pt"
    before = path.read_bytes()
    monkeypatch.setattr(ckpt.torch, "save", _enospc_midway)
    assert cli.main(["train", "--steps", "3", "--out", str(run), "--no-progress"]) == 2
    one_line_error(capsys, "disk full", str(path), trained=True)
    assert path.read_bytes() == before and temporaries(run) == []


def test_disk_full_while_exporting(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ckpt.torch, "save", _enospc_midway)
    out = tmp_path / "small.pt"
    assert cli.main(["export", "--checkpoint", str(run), "--out", str(out)]) == 2
    one_line_error(capsys, "disk full", str(out))
    assert not out.exists() and temporaries(tmp_path) == []


def test_disk_full_while_writing_samples_keeps_the_old_png(run, tmp_path, capsys, monkeypatch):
    png = tmp_path / "samples.png"
    assert cli.main(["sample", "--checkpoint", str(run), "--num", "4", "--steps", "2", "--out", str(png),
                     "--no-progress"]) == 0
    before = png.read_bytes()
    capsys.readouterr()

    def full(self, f, *args, **kwargs):
        f.write(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    assert cli.main(["sample", "--checkpoint", str(run), "--num", "9", "--steps", "2", "--out", str(png),
                     "--no-progress"]) == 2
    one_line_error(capsys, "disk full", str(png))
    assert png.read_bytes() == before and temporaries(tmp_path) == []


def _not_writable(monkeypatch, folder: Path):
    """Make ``folder`` unwritable: chmod where that works; as root (where chmod does not stop writes) the
    temporary files that every writer starts with are refused instead."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o500)
    probe = folder / "probe"
    try:
        probe.write_bytes(b"")
    except PermissionError:
        return
    probe.unlink()
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve() == folder.resolve():
            raise PermissionError(errno.EACCES, "Permission denied", os.path.join(dir, "tmpfile"))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    real_open = os.open

    def os_open(path, flags, *args, **kwargs):
        if Path(path).parent.resolve() == folder.resolve() and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(ckpt.os, "open", os_open)


def test_read_only_output_is_refused_before_sampling(run, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "readonly"
    _not_writable(monkeypatch, folder)
    sampled = []
    monkeypatch.setattr(ddpm_lite.sampling, "generate", lambda *a, **k: sampled.append(1))
    try:
        assert cli.main(["sample", "--checkpoint", str(run), "--out", str(folder / "x.png"), "--no-progress"]) == 2
        one_line_error(capsys, "permission denied", str(folder / "x.png"))
        assert sampled == []

        assert cli.main(["export", "--checkpoint", str(run), "--out", str(folder / "small.pt")]) == 2
        one_line_error(capsys, "permission denied", str(folder / "small.pt"))

        assert cli.main(["train", "--out", str(folder), "--steps", "1", *TINY]) == 2
        one_line_error(capsys, "permission denied", str(folder))
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="chmod does not stop root from writing; the monkeypatched variant above covers root")
def test_read_only_folder_by_chmod(run, tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        assert cli.main(["sample", "--checkpoint", str(run), "--out", str(folder / "x.png"), "--no-progress"]) == 2
        one_line_error(capsys, "permission denied")
    finally:
        folder.chmod(0o700)


def test_out_is_a_folder_or_under_a_file(run, tmp_path, capsys):
    assert cli.main(["sample", "--checkpoint", str(run), "--out", str(tmp_path), "--no-progress"]) == 2
    one_line_error(capsys, f"--out {tmp_path} is a folder")
    assert cli.main(["sample", "--checkpoint", str(run), "--out", str(run / "checkpoint.pt" / "x.png")]) == 2
    one_line_error(capsys, str(run / "checkpoint.pt"), "not a folder")
    assert cli.main(["sample", "--checkpoint", str(run), "--out", str(tmp_path / "x.jpg")]) == 2
    one_line_error(capsys, "ending in .png")
    assert cli.main(["export", "--checkpoint", str(run), "--out", str(tmp_path)]) == 2
    one_line_error(capsys, f"{tmp_path} is a folder")
    assert cli.main(["train", "--out", str(run / "config.json"), "--steps", "1", "--no-progress"]) == 2
    one_line_error(capsys, str(run / "config.json"), "not a folder")


@pytest.mark.parametrize("device", ["cuda", "cuda:7", "mps", "foo"])
@pytest.mark.parametrize("command", ["train", "sample", "bpd"])
def test_unavailable_device_gives_one_line(run, tmp_path, capsys, device, command):
    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 7:
        pytest.skip("this machine has the device")
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    args = {"train": ["train", "--out", str(tmp_path / "new"), "--steps", "1"],
            "sample": ["sample", "--checkpoint", str(run), "--out", str(tmp_path / "x.png")],
            "bpd": ["bpd", "--checkpoint", str(run)]}[command]
    assert cli.main([*args, "--device", device, "--no-progress"]) == 2
    line = one_line_error(capsys, f"--device {device}", "this machine has: cpu")
    assert "not available" in line or "unknown device" in line
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "new").exists()


# --------------------------------------------------------------------------- 5. hostile checkpoints


class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _hostile(tmp_path: Path, legacy: bool = False) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    path = tmp_path / ("legacy.pt" if legacy else "hostile.pt")
    state = {"format": ckpt.FORMAT, "version": 1, "step": 1, "config": {}, "payload": Payload(marker)}
    if legacy:
        with open(path, "wb") as f:
            pickle.dump(state, f, protocol=2)
    else:
        torch.save(state, path)
    return path, marker


@pytest.mark.parametrize("legacy", [False, True])
def test_hostile_pickle_is_blocked_not_called_corrupt(tmp_path, capsys, legacy):
    path, marker = _hostile(tmp_path, legacy)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "blocked by the safe loader (weights_only=True)" in message
    assert "not tensors or plain containers" in message and "system" in message
    assert "do not load it with weights_only=False unless you trust its source" in message
    assert "truncated" not in message
    for advice in ("Re-running", "will likely succeed", "add_safe_globals", "two options"):
        assert advice not in message
    assert cli.main(["sample", "--checkpoint", str(path), "--out", str(tmp_path / "x.png")]) == 2
    one_line_error(capsys, "blocked by the safe loader")
    assert not marker.exists()


def test_truncated_stays_truncated(run, capsys):
    path = run / "checkpoint.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert cli.main(["sample", "--checkpoint", str(path), "--out", str(run / "x.png")]) == 2
    line = one_line_error(capsys, "truncated or corrupt")
    assert "weights_only" not in line and "blocked" not in line


def test_hostile_checkpoint_end_to_end_in_a_subprocess(tmp_path):
    path, marker = _hostile(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("DDPM_LITE_DEBUG", None)
    done = subprocess.run([sys.executable, "-m", "ddpm_lite", "sample", "--checkpoint", str(path), "--out",
                           str(tmp_path / "x.png")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("ddpm-lite sample: error:") and "blocked by the safe loader" in lines[0]
    assert not marker.exists() and not (tmp_path / "x.png").exists()


# --------------------------------------------------------------------------- 6. atomic pictures


def test_failed_image_write_leaves_the_previous_png(tmp_path, monkeypatch):
    png = tmp_path / "grid.png"
    save_image_grid(torch.zeros(4, 1, 8, 8), png)
    before = png.read_bytes()

    def crash(self, f, *args, **kwargs):
        f.write(b"\x89PNG\r\n half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_image_grid(torch.ones(9, 1, 8, 8), png)
    monkeypatch.undo()
    assert png.read_bytes() == before and temporaries(tmp_path) == []


def test_failed_points_write_leaves_the_previous_png(tmp_path, monkeypatch):
    import matplotlib.figure

    png = tmp_path / "points.png"
    save_points(torch.randn(50, 2), png)
    before = png.read_bytes()

    def crash(self, f, *args, **kwargs):
        f.write(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", crash)
    with pytest.raises(OSError) as info:
        save_points(torch.randn(50, 2), png)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(png)
    monkeypatch.undo()
    assert png.read_bytes() == before and temporaries(tmp_path) == []


def test_parallel_image_writes_leave_one_whole_picture(tmp_path):
    png = tmp_path / "grid.png"
    grids = [torch.full((16, 1, 8, 8), value) for value in (-1.0, 1.0)]

    def writer(images):
        for _ in range(15):
            save_image_grid(images, png, scale=4)

    threads = [threading.Thread(target=writer, args=(g,)) for g in grids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with Image.open(png) as image:
        image.load()
        assert len(np.unique(np.asarray(image))) == 2  # the padding and one of the two grids, not a mix
    assert temporaries(tmp_path) == []


# --------------------------------------------------------------------------- 7. config checked before building


def test_tiny_file_asking_for_a_huge_model_is_refused_without_building_it(run, tmp_path, capsys, monkeypatch):
    config = load_checkpoint(run / "checkpoint.pt")["config"]
    config["model"]["model_channels"] = 100_000
    weights = {"time_embed.0.weight": torch.zeros(3)}  # a real name with the wrong shape
    state = {"format": ckpt.FORMAT, "version": 1, "step": 1, "config": config, "model": weights, "ema": weights,
             "optimizer": None, "exported": True}
    path = tmp_path / "huge.pt"
    torch.save(state, path)
    assert path.stat().st_size < 4096

    real_build = ExperimentConfig.build_model
    devices = []

    def guarded(self):
        devices.append(torch.get_default_device().type)
        if self.model.model_channels > 1000 and devices[-1] != "meta":
            raise AssertionError("the huge model was built on real memory")
        return real_build(self)

    monkeypatch.setattr(ExperimentConfig, "build_model", guarded)
    with pytest.raises(CheckpointMismatchError, match=r"do not fit the model its config describes.*shapes differ"):
        load_model(path, device="cpu")
    assert devices == ["meta"]
    assert cli.main(["sample", "--checkpoint", str(path), "--out", str(tmp_path / "x.png")]) == 2
    one_line_error(capsys, str(path), "nothing was built")

    folder = tmp_path / "resume"
    folder.mkdir()
    state.update(optimizer={"state": {}, "param_groups": []}, exported=False)
    torch.save(state, folder / "checkpoint.pt")
    assert cli.main(["train", "--out", str(folder), "--steps", "3", "--no-progress"]) == 2
    one_line_error(capsys, "do not fit the model its config describes")
    assert devices == ["meta"] * 3


def test_load_model_still_loads_real_checkpoints(run):
    model, diffusion, config = load_model(run, device="cpu")
    assert all(p.device.type == "cpu" for p in model.parameters()) and diffusion.num_timesteps == 20


# --------------------------------------------------------------------------- 8. the safe loader everywhere


def test_every_torch_load_in_the_package_uses_weights_only():
    calls = []
    for path in sorted((REPO / "ddpm_lite").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                kwargs = {k.arg: k.value for k in node.keywords}
                safe = isinstance(kwargs.get("weights_only"), ast.Constant) and kwargs["weights_only"].value is True
                calls.append((f"{path.relative_to(REPO)}:{node.lineno}", safe))
    assert calls and [where for where, safe in calls if not safe] == []
    assert '"torch>=2.6' in (REPO / "pyproject.toml").read_text()


# --------------------------------------------------------------------------- 9. offline download, one line


def test_offline_download_is_one_line_naming_the_folder_and_digits(tmp_path, capsys, monkeypatch):
    import torchvision

    def offline(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://example/, got:\n"
                           "<urlopen error [Errno -3] Temporary failure in name resolution>\n")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)
    assert cli.main(["train", "--data", "mnist", "--download", "--root", str(tmp_path), "--out",
                     str(tmp_path / "run"), "--steps", "1", "--no-progress"]) == 2
    one_line_error(capsys, "could not download 'mnist'", "Temporary failure in name resolution",
                   str(tmp_path / "MNIST" / "raw"), "--data digits")


# --------------------------------------------------------------------------- 10. make lab as root


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("uid, flag", [("0", True), ("1000", False)])
def test_make_lab_allows_root_only_as_root(tmp_path, uid, flag):
    bin_dir, fake_id = tmp_path / "bin", tmp_path / "id"
    bin_dir.mkdir()
    fake_id.mkdir()
    (bin_dir / "jupyter").write_text('#!/bin/sh\necho "jupyter $*"\n')
    (fake_id / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    for script in (bin_dir / "jupyter", fake_id / "id"):
        script.chmod(0o755)
    stamp = tmp_path / "stamp"
    stamp.touch()
    env = {**os.environ, "PATH": f"{fake_id}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["make", "-s", "-C", str(REPO), "lab", f"BIN={bin_dir}", f"STAMP={stamp}"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "jupyter lab notebooks/" + (" --allow-root" if flag else "")


def test_lock_is_released_when_the_holder_dies(tmp_path):
    """The OS drops a flock with its process: a killed trainer leaves no stale lock behind."""
    folder = tmp_path / "run"
    code = ("import sys, time\nfrom ddpm_lite.checkpoint import run_lock\n"
            "with run_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(600)\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderLockedError, match=f"process {holder.pid}"):
            with run_lock(folder):
                pass
    finally:
        holder.kill()
        holder.communicate(timeout=60)
    deadline = time.monotonic() + 10
    while True:
        try:
            with run_lock(folder):
                break
        except RunFolderLockedError:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_resume_checks_a_huge_config_before_building_it(tmp_path):
    """Trainer.resume reads the config from the file: it is checked against the tensors on the meta device first."""
    from ddpm_lite.checkpoint import CheckpointMismatchError, load_checkpoint, save_checkpoint
    from ddpm_lite.configs import ExperimentConfig
    from ddpm_lite.train import Trainer

    cfg = ExperimentConfig.preset("toy").override(["model.hidden=16", "batch_size=32"])
    trainer = Trainer.from_config(cfg, progress=False, device="cpu", checkpoint_path=tmp_path / "checkpoint.pt")
    trainer.train(1)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    state["config"]["model"]["hidden"] = 1_000_000  # a 4 TB model if it were built
    save_checkpoint(state, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointMismatchError, match="nothing was built"):
        Trainer.resume(tmp_path / "checkpoint.pt", device="cpu", progress=False)
