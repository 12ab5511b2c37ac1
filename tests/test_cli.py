"""The ``ddpm-lite`` command, end to end on the embedded digits with tiny models."""
import os
import re
import subprocess
import sys

import pytest
from PIL import Image

from ddpm_lite import cli
from ddpm_lite.checkpoint import load_checkpoint
from ddpm_lite.images import grid_size

TINY = ["--set", "model.model_channels=16", "--set", "model.num_res_blocks=1", "--set", "model.num_head_channels=16",
        "--set", "diffusion.num_timesteps=20", "--batch-size", "16", "--no-progress"]


@pytest.mark.parametrize("argv", [[], ["train"], ["sample"], ["bpd"], ["export"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([*argv, "--help"])
    assert info.value.code == 0
    assert "usage: ddpm-lite" in capsys.readouterr().out


def test_python_dash_m_entry_point():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "ddpm_lite", "sample", "--help"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0 and "--checkpoint" in done.stdout


def test_train_sample_bpd(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--preset", "digits", "--steps", "3", "--out", str(out), *TINY]) == 0
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 3 and (out / "config.json").is_file()
    assert "step 3: loss" in capsys.readouterr().out

    # rerunning resumes up to the new total
    assert cli.main(["train", "--steps", "5", "--out", str(out), "--no-progress"]) == 0
    assert "resuming at step 3" in capsys.readouterr().err
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 5

    png = tmp_path / "samples.png"
    assert cli.main(["sample", "--checkpoint", str(out / "checkpoint.pt"), "--num", "10", "--steps", "5",
                     "--out", str(png), "--no-progress"]) == 0
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert image.format == "PNG" and image.mode == "L"
        assert image.size == grid_size(10, 8, 8, scale=4) == (4 * (4 * 9 + 1), 4 * (3 * 9 + 1))

    assert cli.main(["sample", "--checkpoint", str(out), "--num", "4", "--steps", "4", "--ddim", "--eta", "0.5",
                     "--out", str(tmp_path / "ddim.png"), "--scale", "1", "--no-progress"]) == 0
    with Image.open(tmp_path / "ddim.png") as image:
        assert image.size == (2 * 9 + 1, 2 * 9 + 1)
    capsys.readouterr()

    assert cli.main(["bpd", "--checkpoint", str(out), "--num", "6", "--batch-size", "4", "--no-progress"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    match = re.match(r"([0-9.]+) bits/dim", line)
    assert match and 0 < float(match.group(1)) < 100, line


def test_class_conditional_sampling(tmp_path, capsys):
    out = tmp_path / "cond"
    assert cli.main(["train", "--preset", "digits_cond", "--steps", "2", "--out", str(out), *TINY]) == 0
    png = tmp_path / "threes.png"
    assert cli.main(["sample", "--checkpoint", str(out), "--num", "4", "--steps", "3", "--class", "3",
                     "--out", str(png), "--no-progress"]) == 0
    assert cli.main(["sample", "--checkpoint", str(out), "--num", "20", "--steps", "3",
                     "--out", str(tmp_path / "all.png"), "--no-progress"]) == 0
    with Image.open(tmp_path / "all.png") as image:
        assert image.size == grid_size(20, 8, 8, ncol=10, scale=4)  # one column per class
    capsys.readouterr()
    assert cli.main(["sample", "--checkpoint", str(out), "--class", "12", "--out", str(png)]) == 2
    assert "--class must lie in [0, 9]" in capsys.readouterr().err


def test_toy_points(tmp_path):
    out = tmp_path / "toy"
    assert cli.main(["train", "--preset", "toy", "--data", "moons", "--steps", "3", "--out", str(out),
                     "--set", "diffusion.num_timesteps=50", "--no-progress"]) == 0
    png = tmp_path / "points.png"
    assert cli.main(["sample", "--checkpoint", str(out), "--num", "100", "--steps", "5", "--out", str(png),
                     "--no-progress"]) == 0
    with Image.open(png) as image:
        assert image.format == "PNG"


def one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


def test_missing_checkpoint(tmp_path, capsys):
    assert cli.main(["sample", "--checkpoint", str(tmp_path / "nope.pt")]) == 2
    assert "no checkpoint at" in one_line_error(capsys)
    assert cli.main(["bpd", "--checkpoint", str(tmp_path)]) == 2
    assert "error" in one_line_error(capsys)


def test_missing_dataset_offline(tmp_path, capsys):
    assert cli.main(["train", "--data", "mnist", "--root", str(tmp_path), "--out", str(tmp_path / "run"),
                     "--steps", "1", "--no-progress"]) == 2
    message = one_line_error(capsys)
    assert "'mnist' not found" in message and "--download" in message


def test_bad_override(tmp_path, capsys):
    assert cli.main(["train", "--out", str(tmp_path), "--set", "model.width=3", "--steps", "1"]) == 2
    assert "unknown config key 'model.width'" in one_line_error(capsys)
