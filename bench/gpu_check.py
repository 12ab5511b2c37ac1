"""The device check: one command for a session that is lent a GPU, one report (JSON and markdown) for docs/gpu.md.

    python bench/gpu_check.py --prepare        # here, with the package registry: diffusers' wheel into build/gpu-wheels
    python3 bench/gpu_check.py --out DIR       # on the GPU (no network there): 5-7 minutes on an H200, estimated
    python bench/gpu_check.py --dry-run        # on a CPU: every part on tiny settings, and the estimate table

On the device, with ``build/gpu-wheels`` carried along (diffusers is not installed there, and nothing can be
downloaded: the check installs the wheels into build/gpu-deps itself), it:

1. runs the CUDA-marked tests (``pytest -m cuda``: tests/test_presets.py, tests/test_gpu_check.py);
2. trains each GPU preset (``mnist``, ``fashion_mnist``, ``cifar10``; and ``digits``) for a fixed number of steps
   with :class:`~ddpm_lite.train.Trainer`, on data it makes itself (scikit-learn's digits upsampled to the preset's
   size; for CIFAR-10 also coloured), and records training images/s, peak GPU memory and sampling images/s
   (50 respaced ancestral steps) for our U-Net and for diffusers' ``UNet2DModel`` of the same widths, levels,
   attention and outputs (bench/train_speed.py's twin), trained by the same Trainer in the same precision;
3. the AMP loss gap against float32: runs from the same seed, data, t and noise in fp32, bf16 and fp16 (with
   the gradient scaler, the T4's path): the loss of the same fp32-trained weights on one batch under each
   autocast (rounding alone), and the mean loss of the last third of each run;
4. channels_last against NCHW, and ``torch.compile``: its compile time, its steady step, and after how many steps
   it pays back (against each preset's own run length);
5. minutes per notebook training cell from the measured step times, beside the estimates for a T4 and an H200
   from FLOPs and published throughput (section "estimates" of the report; ``--dry-run`` prints them too).

Everything goes to ``DIR/gpu-check.json`` and ``DIR/gpu-check.md``; the markdown is what docs/gpu.md records, with
the date. ``--dry-run`` exercises the same code on the CPU with a few steps and tiny batches (tests/test_gpu_check.py
runs it): its numbers are not measurements.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import json
import math
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "bench"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from ddpm_lite.configs import (  # noqa: E402
    GPU_PRESETS,
    ExperimentConfig,
    resolve_channels_last,
    resolve_precision,
)
from ddpm_lite.data import ImageDataset, load_dataset  # noqa: E402
from ddpm_lite.sampling import generate  # noqa: E402

DEPS = ROOT / "build" / "gpu-deps"  # diffusers, installed (not carried: too large)
WHEELS = ROOT / "build" / "gpu-wheels"  # diffusers' wheel and importlib_metadata's: what travels to the device
CHECKED = ("digits",) + GPU_PRESETS  # the presets trained by the check
COMPILED = ("mnist", "cifar10")  # torch.compile is measured on these (a minute or so of compiling each)
SAMPLE_STEPS = 50

# Published throughput, turned into FLOP/s with torch's FLOP counter on torchvision's resnet50 (v1.5):
# 8.18 GFLOP per image forward, 24.3 GFLOP per image for a training step (forward and backward).
# NVIDIA DeepLearningExamples, PyTorch/Classification/ConvNets/resnet50v1.5/README.md (pytorch-21.03 container):
#   T4, mixed precision inference, batch 256: 1198 img/s            -> 1198 * 8.18e9  = 9.8 TFLOP/s
#   A100 80GB, 1 GPU, mixed precision training: 2470 img/s           -> 2470 * 24.3e9  = 60 TFLOP/s
# The T4 has no published training row there: its training rate is taken between half of its inference rate and
# all of it. The H200 is taken at the A100's rate, a lower bound (H200: 989 dense bf16 TFLOP/s and 4.8 TB/s
# against the A100's 312 and 2.0). A small U-Net's step is also bounded below by the host's time to launch its
# kernels one by one: ops per step times ~10 us each (11 us per op was measured for eager PyTorch on tiny tensors
# on the development CPU), 20 us on Colab's slower two-vCPU host for the pessimistic end. At the best end the host
# runs ahead of the GPU (step = the longer of the two); at the worst end it waits for the GPU within every step
# (step = their sum), as it did while GaussianDiffusion._extract made 18 blocking host-to-device copies per
# training step (now one copy per table and device; tests/test_device_syncs.py): a device run says which holds.
DEVICES = {  # (FLOP/s, host seconds per op, host and GPU overlap)
    "T4": {"best": (9.8e12, 10e-6, True), "worst": (4.9e12, 20e-6, False)},
    "H200": {"best": (60e12, 10e-6, True), "worst": (60e12, 10e-6, False)},
}
THROUGHPUT_SOURCE = ("published: NVIDIA DeepLearningExamples ResNet-50 v1.5 (PyTorch) — T4 AMP inference 1198 img/s "
                     "= 9.8 TFLOP/s (training taken at 4.9-9.8), A100 AMP training 2470 img/s = 60 TFLOP/s (a lower "
                     "bound for the H200); plus 10-20 us of host time per launched op, overlapping the GPU's work "
                     "(best) or not (worst)")
FUSED_ADAMW_OPS = 10  # launches of torch's fused AdamW for all the parameters of a small model (an estimate)
RENDER_S = 0.5  # one redraw of notebook 07's training monitor (matplotlib to PNG), besides its sampling

# what each notebook's training cell runs on the GPU path: (preset, steps, monitor redraws, samples, sample steps)
NOTEBOOK_CELLS = {
    "07 · 5. Train one (mnist)": ("mnist", None, 20, 16, 25),
    "07 · 5. Train one (fashion_mnist)": ("fashion_mnist", None, 20, 16, 25),
    "07 · 5. Train one (cifar10)": ("cifar10", None, 20, 16, 25),
    "08 · the noisy classifier": ("digits_classifier", 2000, 0, 0, 0),
    "10 · train it yourself (TRAIN = True)": ("digits", 2000, 0, 0, 0),
}


# --------------------------------------------------------------------------- data the device can make


def synthetic_data(config: ExperimentConfig, n: int | None = None) -> ImageDataset:
    """Training images of the preset's shape made without a download: scikit-learn's 8x8 digits upsampled
    (bicubic) to its size, coloured for 3 channels (a random stroke and background colour per image)."""
    channels, size = config.model.in_channels, config.model.image_size
    digits = load_dataset("digits", image_size=size if size != 8 else None)
    x, y = digits.images, digits.labels
    if n is not None:
        x, y = x[:n], y[:n]
    if channels == 3:
        g = torch.Generator().manual_seed(0)
        fg, bg = torch.rand(len(x), 3, 1, 1, generator=g), torch.rand(len(x), 3, 1, 1, generator=g)
        ink = (x + 1) / 2
        x = (bg * (1 - ink) + fg * ink) * 2 - 1
    elif channels != 1:
        raise ValueError(f"no synthetic data for {channels} channels")
    return ImageDataset(f"synthetic-{config.data}", x.contiguous(), y, num_classes=10)


# --------------------------------------------------------------------------- sizes and costs (no GPU needed)


class _CountOps(TorchDispatchMode):
    """Counts the operators dispatched (about one kernel launch each on a GPU)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


@functools.cache
def costs(name: str) -> dict:
    """Parameters, training FLOPs per step (torch's FLOP counter on the meta device: the network's forward and
    backward at the preset's batch), forward FLOPs per image, and operators per training step and per sampling
    step (counted on the CPU on a batch of 4: the count does not depend on the batch)."""
    from ddpm_lite.train import Trainer

    config = ExperimentConfig.preset(name)
    shape = config.sample_shape
    with torch.device("meta"):
        model = config.build_model()
        x = torch.randn(config.batch_size, *shape)
        t = torch.zeros(config.batch_size, dtype=torch.long)
    params = sum(p.numel() for p in model.parameters())
    with FlopCounterMode(display=False) as counter:
        model(x, t).float().square().mean().backward()
    train_flops = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x[:1], t[:1])
    forward_flops = counter.get_total_flops()

    torch.manual_seed(0)
    small = config.replace(batch_size=4)
    trainer = Trainer.from_config(small, synthetic_data(config, n=16), device="cpu", progress=False)
    trainer.train(1)
    # the CPU's AdamW (foreach, with a host read per parameter) is left out of the count: on CUDA the Trainer
    # uses the fused AdamW, a few launches for all the parameters (FUSED_ADAMW_OPS)
    trainer.optimizer.step = lambda *args, **kwargs: None
    count = _CountOps()
    with count:
        trainer.train(1)
    train_ops = count.count + FUSED_ADAMW_OPS
    if config.objective == "diffusion":
        diffusion = config.build_diffusion()
        xs = torch.randn(4, *shape)
        ts = torch.full((4,), diffusion.num_timesteps // 2, dtype=torch.long)
        count = _CountOps()
        with count, torch.no_grad():
            diffusion.p_sample(trainer.ema, xs, ts)
        sample_ops = count.count
    else:
        sample_ops = 0
    return {"preset": name, "data": config.data, "shape": list(shape), "batch_size": config.batch_size,
            "steps": config.steps, "params": params, "train_gflop_per_step": train_flops / 1e9,
            "forward_mflop_per_image": forward_flops / 1e6, "ops_per_train_step": train_ops,
            "ops_per_sample_step": sample_ops}


def step_seconds(flops: float, ops: int, rate: float, per_op: float, overlap: bool = True) -> float:
    """A step's time: its FLOPs at ``rate`` and the host's launches, ``ops * per_op``: the longer of the two when
    the host runs ahead of the GPU (``overlap``), else their sum."""
    compute, launch = flops / rate, ops * per_op
    return max(compute, launch) if overlap else compute + launch


def cell_minutes(cost: dict, steps: int, redraws: int, samples: int, sample_steps: int, rate: float,
                 per_op: float, overlap: bool = True, train_step_s: float | None = None,
                 sample_step_s: float | None = None) -> float:
    """Minutes of a notebook's training cell: ``steps`` training steps, and ``redraws`` monitor redraws of
    ``samples`` images with ``sample_steps`` network calls each. Measured step times replace the model's."""
    train = train_step_s if train_step_s is not None else step_seconds(
        cost["train_gflop_per_step"] * 1e9, cost["ops_per_train_step"], rate, per_op, overlap)
    sample = sample_step_s if sample_step_s is not None else step_seconds(
        cost["forward_mflop_per_image"] * 1e6 * samples, cost["ops_per_sample_step"], rate, per_op, overlap)
    return (steps * train + redraws * (sample_steps * sample + RENDER_S)) / 60


def estimates(all_costs: dict[str, dict]) -> list[dict]:
    """Minutes of each notebook's training cell on a T4 and an H200, [best, worst], from FLOPs and published
    throughput (see DEVICES)."""
    rows = []
    for cell, (name, steps, redraws, samples, sample_steps) in NOTEBOOK_CELLS.items():
        cost = all_costs[name]
        steps = steps or cost["steps"]
        row = {"cell": cell, "preset": name, "steps": steps}
        for device, ends in DEVICES.items():
            row[device] = [cell_minutes(cost, steps, redraws, samples, sample_steps, *ends[end])
                           for end in ("best", "worst")]
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- measurements


def load_diffusers(deps: Path = DEPS, wheels: Path = WHEELS):
    """diffusers' UNet2DModel from ``deps`` (appended to sys.path: our torch and numpy come first), or the reason
    it cannot be used. Where ``deps`` has no diffusers but ``wheels`` has its wheel (carried to the device, which
    has no network), they are installed into ``deps`` first, offline."""
    if not (deps / "diffusers").is_dir() and list(wheels.glob("diffusers-*.whl")):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target",
                        str(deps), *map(str, sorted(wheels.glob("*.whl")))], check=False)
    if deps.is_dir() and str(deps) not in sys.path:
        sys.path.append(str(deps))
    try:
        import diffusers
        from diffusers import UNet2DModel
    except Exception as err:  # missing, or broken against this torch
        return None, f"diffusers not importable ({type(err).__name__}: {str(err).splitlines()[0][:120]}); run " \
                     "`python bench/gpu_check.py --prepare` where the registry is reachable and carry build/gpu-wheels"
    return (diffusers.__version__, UNet2DModel), None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_run(config: ExperimentConfig, data, device, steps: int, warmup: int, model=None, **options) -> dict:
    """Train ``warmup + steps`` steps; the images/s of the last ``steps``, the first step's seconds (compilation,
    cuDNN's autotuning), the peak GPU memory and the losses."""
    from ddpm_lite.train import Trainer

    config = config.replace(**options)
    torch.manual_seed(config.seed)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    trainer = Trainer.from_config(config, data, model=model, device=device, progress=False)
    start = time.perf_counter()
    trainer.train(1)
    _sync(device)
    first = time.perf_counter() - start
    trainer.train(max(warmup - 1, 0))
    _sync(device)
    start = time.perf_counter()
    trainer.train(steps)
    _sync(device)
    seconds = (time.perf_counter() - start) / max(steps, 1)
    losses = trainer.history["loss"]
    return {"precision": trainer.precision,
            "channels_last": trainer.memory_format is torch.channels_last,
            "compiled": bool(config.torch_compile), "ms_per_step": seconds * 1e3,
            "images_per_s": config.batch_size / seconds, "first_step_s": first,
            "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
            "losses": losses, "trainer": trainer}


def sampling_run(model, diffusion, shape, batch: int, steps: int, device, repeats: int = 3) -> dict:
    """Images/s of ``generate`` (``steps`` respaced ancestral steps, batch ``batch``), best of ``repeats``."""
    model.eval()
    generate(model, diffusion, (batch, *shape), steps=steps, device=device,
             generator=torch.Generator(device=device).manual_seed(0))  # warm-up
    best = math.inf
    for i in range(repeats):
        _sync(device)
        start = time.perf_counter()
        generate(model, diffusion, (batch, *shape), steps=steps, device=device,
                 generator=torch.Generator(device=device).manual_seed(i))
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return {"batch": batch, "steps": steps, "seconds": best, "images_per_s": batch / best,
            "ms_per_network_call": best / steps * 1e3}


def loss_gap(runs: dict[str, dict]) -> dict:
    """Each AMP run's mean loss over the last third of its steps against fp32's (the same seed, data, t and noise:
    the runs differ by rounding only, which accumulates over the steps), and whether all its losses were finite."""
    ref = runs["fp32"]["losses"]
    third = max(len(ref) // 3, 1)
    return {name: {"last_third_rel": statistics.fmean(run["losses"][-third:]) / statistics.fmean(ref[-third:]) - 1,
                   "finite": all(math.isfinite(v) for v in run["losses"])}
            for name, run in runs.items() if name != "fp32"}


def rounding_gap(trainer, precision: str, batch: int = 256) -> float:
    """The relative change of the loss of the same (fp32-trained) weights on the same batch, t and noise when the
    forward runs under ``precision``'s autocast: the rounding alone. (At initialisation this is 0: ADM's last
    convolution starts at zero, so the first loss is the same in every precision.)"""
    model, device = trainer.model, trainer.device
    x, y = trainer.source.get(torch.arange(min(batch, len(trainer.source))))
    g = torch.Generator(device=device).manual_seed(1)
    t = torch.randint(0, trainer.diffusion.num_timesteps, (len(x),), device=device, generator=g)
    noise = torch.randn(x.shape, device=device, generator=g)
    uniform = torch.rand((len(x),), device=device, generator=g)
    draw = lambda kind, shape: noise if kind == "noise" else uniform  # noqa: E731
    weights = torch.ones(len(x), device=device)
    was_training = model.training
    model.eval()
    try:
        losses = {}
        for mode in ("fp32", precision):
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode)
            context = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
            with torch.no_grad(), context:
                losses[mode] = float(trainer.objective(model, x, y, t, weights, draw)[0])
    finally:
        model.train(was_training)
    return abs(losses[precision] - losses["fp32"]) / abs(losses["fp32"])


def check_preset(name: str, device: torch.device, settings: dict, diffusers_info, log) -> dict:
    """Every measurement of one preset (see the module's docstring)."""
    config = ExperimentConfig.preset(name)
    if settings["batch"]:
        config = config.replace(batch_size=settings["batch"])
    data = synthetic_data(config)
    steps, warmup = settings["steps"], settings["warmup"]
    cuda = device.type == "cuda"
    auto = resolve_precision("auto", device)
    out = {"preset": name, "batch_size": config.batch_size, "auto_precision": auto,
           "auto_channels_last": resolve_channels_last(None, device, auto), "runs": {}}
    runs = out["runs"]

    # precisions: fp32, bf16, and fp16 with its scaler (CUDA only); each run gives a speed too
    precisions = ["fp32", "bf16"] + (["fp16"] if cuda else [])
    gap_runs = {}
    for precision in precisions:
        run = train_run(config, data, device, settings["gap_steps"], warmup, mixed_precision=precision)
        log(f"{name}: {precision}: {run['images_per_s']:.0f} images/s, first step {run['first_step_s']:.2f} s")
        gap_runs[precision] = run
    ours = gap_runs[auto]  # the preset as the notebooks train it
    out["loss_gap"] = loss_gap(gap_runs)
    for precision in out["loss_gap"]:
        out["loss_gap"][precision]["same_weights_rel"] = rounding_gap(gap_runs["fp32"]["trainer"], precision)
    for precision, run in gap_runs.items():
        runs[f"ours {precision}"] = _public(run)

    # the memory format the preset does not use by default, in the default precision
    flip = not ours["channels_last"]
    run = train_run(config, data, device, steps, warmup, mixed_precision=auto, channels_last=flip)
    runs[f"ours {auto} {'channels_last' if flip else 'NCHW'}"] = _public(run)
    log(f"{name}: {'channels_last' if flip else 'NCHW'}: {run['images_per_s']:.0f} images/s")

    # sampling with our EMA U-Net
    trainer = ours["trainer"]
    if config.objective == "diffusion":
        out["sampling"] = {"ours": sampling_run(trainer.ema, trainer.diffusion, config.sample_shape,
                                                settings["sample_batch"], settings["sample_steps"], device)}
    # diffusers' twin, trained by the same Trainer in the same precision
    if diffusers_info[0] is not None and config.model_kind == "unet":
        from train_speed import diffusers_twin

        version, UNet2DModel = diffusers_info[0]
        torch.manual_seed(config.seed)
        twin = diffusers_twin(config.model, UNet2DModel)
        run = train_run(config, data, device, steps, warmup, model=twin, mixed_precision=auto,
                        channels_last=ours["channels_last"])
        runs[f"diffusers {version} {auto}"] = _public(run)
        out["diffusers_params"] = sum(p.numel() for p in twin.parameters())
        out["sampling"]["diffusers"] = sampling_run(run["trainer"].ema, run["trainer"].diffusion, config.sample_shape,
                                                    settings["sample_batch"], settings["sample_steps"], device)
        log(f"{name}: diffusers: {run['images_per_s']:.0f} images/s")
    elif diffusers_info[0] is None:
        out["diffusers_skipped"] = diffusers_info[1]

    # torch.compile: compile time against the steady saving
    if settings["compile"]:
        try:
            run = train_run(config, data, device, steps, warmup, mixed_precision=auto, torch_compile=True)
        except Exception as err:  # a compiler missing or failing is a result too
            out["compile"] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
        else:
            saving = ours["ms_per_step"] - run["ms_per_step"]
            compile_s = run["first_step_s"] - ours["first_step_s"]
            payback = compile_s / (saving / 1e3) if saving > 0 else math.inf
            full = ExperimentConfig.preset(name).steps
            out["compile"] = {"compile_s": compile_s, "ms_per_step": run["ms_per_step"],
                              "eager_ms_per_step": ours["ms_per_step"], "payback_steps": payback,
                              "pays_back_within_run": payback < full, "run_steps": full}
            runs[f"ours {auto} compiled"] = _public(run)
            log(f"{name}: compile {compile_s:.1f} s, {run['ms_per_step']:.1f} ms/step "
                f"(eager {ours['ms_per_step']:.1f}): pays back after {payback:.0f} steps")
    out["ours"] = _public(ours)
    return out


def _public(run: dict) -> dict:
    """A run's numbers without the trainer (and the losses summarised)."""
    losses = run["losses"]
    return {**{k: v for k, v in run.items() if k not in ("trainer", "losses")},
            "first_loss": losses[0], "last_loss": losses[-1]}


TEST_COMMAND = ["-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider", "-m", "cuda",
                "tests/test_presets.py", "tests/test_gpu_check.py"]  # addopts cleared: nbval is not on the device


def run_tests(timeout: int = 240) -> dict:
    """The CUDA-marked tests, in a subprocess (the project's pytest options need plugins the device lacks)."""
    cmd = [sys.executable, *TEST_COMMAND]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"command": " ".join(cmd[2:]), "returncode": None, "summary": f"timed out after {timeout} s"}
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return {"command": "python " + " ".join(cmd[1:]), "returncode": proc.returncode,
            "summary": lines[-1] if lines else proc.stderr[-300:], "seconds": time.perf_counter() - start,
            "failures": [line for line in lines if line.startswith(("FAILED", "ERROR"))][:20]}


def machine(device: torch.device) -> dict:
    info = {"date": str(datetime.date.today()), "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, capability=f"{props.major}.{props.minor}",
                    memory_gib=round(props.total_memory / 2**30, 1), multiprocessors=props.multi_processor_count,
                    cudnn=torch.backends.cudnn.version())
    else:
        info["gpu"] = None
    return info


# --------------------------------------------------------------------------- the report


def markdown(report: dict) -> str:
    m = report["machine"]
    where = f"{m['gpu']} (compute capability {m['capability']}, {m['memory_gib']} GiB)" if m.get("gpu") \
        else "no GPU (CPU)"
    lines = [f"## GPU check, {m['date']}: {where}", "",
             f"torch {m['torch']}, CUDA {m['cuda']}, Python {m['python']}; `bench/gpu_check.py`"
             + (" --dry-run: tiny settings on the CPU, **not measurements**" if report["dry_run"] else "")
             + f"; {report['elapsed_s']:.0f} s in all.", ""]
    tests = report.get("tests")
    if tests:
        lines += [f"CUDA-marked tests (`{tests['command']}`): {tests['summary']}", ""]
        lines += [f"- {line}" for line in tests.get("failures", [])]
    lines += ["### Sizes and costs", "",
              "| preset | data | batch | steps | parameters | GFLOP per training step | MFLOP per image (forward) | "
              "ops per training step | ops per sampling step |", "|---|---|---|---|---|---|---|---|---|"]
    for c in report["costs"].values():
        lines.append(f"| {c['preset']} | {c['data']} {'x'.join(map(str, c['shape']))} | {c['batch_size']} | "
                     f"{c['steps']} | {c['params'] / 1e6:.2f}M | {c['train_gflop_per_step']:.1f} | "
                     f"{c['forward_mflop_per_image']:.0f} | {c['ops_per_train_step']} | {c['ops_per_sample_step']} |")
    lines += ["", "### Estimated minutes per training cell", "", f"Throughput: {THROUGHPUT_SOURCE}.", "",
              "| notebook cell | preset | steps | T4 (best-worst) | H200 (best-worst) |" + (
                  " this device, measured |" if report.get("measured_minutes") else ""),
              "|---|---|---|---|---|" + ("---|" if report.get("measured_minutes") else "")]
    for row in report["estimates"]:
        line = (f"| {row['cell']} | {row['preset']} | {row['steps']} | {row['T4'][0]:.1f}-{row['T4'][1]:.1f} | "
                f"{row['H200'][0]:.1f}-{row['H200'][1]:.1f} |")
        measured = (report.get("measured_minutes") or {}).get(row["cell"])
        if report.get("measured_minutes"):
            line += f" {measured:.1f} |" if measured is not None else " - |"
        lines.append(line)
    if report["checks"]:
        lines += ["", "### Training and sampling speed (synthetic data of each preset's shape)", "",
                  "| preset | run | precision | layout | ms/step | images/s | first step (s) | peak GiB | loss "
                  "first -> last |", "|---|---|---|---|---|---|---|---|---|"]
        for check in report["checks"].values():
            for label, run in check["runs"].items():
                peak = f"{run['peak_gib']:.2f}" if run["peak_gib"] is not None else "-"
                lines.append(f"| {check['preset']} | {label} | {run['precision']} | "
                             f"{'channels_last' if run['channels_last'] else 'NCHW'} | {run['ms_per_step']:.1f} | "
                             f"{run['images_per_s']:.0f} | {run['first_step_s']:.2f} | {peak} | "
                             f"{run['first_loss']:.3f} -> {run['last_loss']:.3f} |")
        lines += ["", "| preset | sampler run | batch | steps | images/s | ms per network call |",
                  "|---|---|---|---|---|---|"]
        for check in report["checks"].values():
            for label, s in (check.get("sampling") or {}).items():
                lines.append(f"| {check['preset']} | {label} | {s['batch']} | {s['steps']} | "
                             f"{s['images_per_s']:.0f} | {s['ms_per_network_call']:.2f} |")
        lines += ["", "AMP against float32: the loss of the same fp32-trained weights on the same batch under "
                  "autocast (rounding alone), and the mean loss of the last third of two runs from the same seed.",
                  "", "| preset | AMP mode | same weights, same batch | mean loss, last third | all losses finite |",
                  "|---|---|---|---|---|"]
        for check in report["checks"].values():
            for mode, gap in check["loss_gap"].items():
                lines.append(f"| {check['preset']} | {mode} | {gap['same_weights_rel']:.3%} | "
                             f"{gap['last_third_rel']:+.2%} | {gap['finite']} |")
        compiled = [(c["preset"], c["compile"]) for c in report["checks"].values() if "compile" in c]
        if compiled:
            lines += ["", "| preset | torch.compile: compile s | ms/step (eager) | pays back after | within the run |",
                      "|---|---|---|---|---|"]
            for name, c in compiled:
                if "error" in c:
                    lines.append(f"| {name} | failed: {c['error']} | | | |")
                else:
                    lines.append(f"| {name} | {c['compile_s']:.1f} | {c['ms_per_step']:.1f} "
                                 f"({c['eager_ms_per_step']:.1f}) | {c['payback_steps']:.0f} steps | "
                                 f"{c['pays_back_within_run']} ({c['run_steps']} steps) |")
        skipped = {c.get("diffusers_skipped") for c in report["checks"].values()} - {None}
        lines += ["", f"diffusers: {skipped.pop()}"] if skipped else []
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "gpu-check", help="report folder")
    parser.add_argument("--dry-run", action="store_true", help="tiny settings on whatever device (CPU): not "
                                                               "measurements")
    parser.add_argument("--prepare", action="store_true",
                        help="fetch diffusers for the device (build/gpu-wheels) and for here (build/gpu-deps)")
    parser.add_argument("--presets", nargs="+", default=list(CHECKED), choices=list(CHECKED))
    parser.add_argument("--steps", type=int, default=None, help="timed steps per run (default 100; dry run 2)")
    parser.add_argument("--gap-steps", type=int, default=None,
                        help="steps of each precision's run for the loss gap (default 200; dry run 3)")
    parser.add_argument("--skip-tests", action="store_true", help="do not run the CUDA-marked tests")
    parser.add_argument("--no-compile", action="store_true", help="do not measure torch.compile")
    parser.add_argument("--budget", type=float, default=360,
                        help="seconds after which torch.compile is skipped and the loss-gap runs are shortened")
    args = parser.parse_args(argv)
    if args.prepare:
        return prepare()
    start = time.perf_counter()
    device = torch.device("cuda") if torch.cuda.is_available() and not args.dry_run else torch.device("cpu")
    if not args.dry_run and device.type != "cuda":
        print("gpu_check: no CUDA GPU here; run it on the device, or with --dry-run on a CPU", file=sys.stderr)
        return 2
    if args.dry_run:
        settings = {"steps": args.steps or 2, "warmup": 1, "gap_steps": args.gap_steps or 3, "batch": 8,
                    "sample_batch": 4, "sample_steps": 3, "compile": False}
    else:
        torch.backends.cudnn.benchmark = True
        settings = {"steps": args.steps or 100, "warmup": 20, "gap_steps": args.gap_steps or 200, "batch": None,
                    "sample_batch": 256,
                    "sample_steps": SAMPLE_STEPS, "compile": not args.no_compile}

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f} s] {message}", flush=True)

    report = {"dry_run": args.dry_run, "machine": machine(device), "settings": settings}
    if not args.skip_tests:
        report["tests"] = run_tests()
        log(f"tests: {report['tests']['summary']}")
    names = list(dict.fromkeys(args.presets + [n for _, (n, *_) in NOTEBOOK_CELLS.items()]))
    report["costs"] = {name: costs(name) for name in names}
    report["estimates"] = estimates(report["costs"])
    log("costs and estimates done")
    diffusers_info = load_diffusers()
    report["checks"] = {}
    for name in args.presets:
        over = time.perf_counter() - start > args.budget
        preset_settings = {**settings, "compile": settings["compile"] and not over and name in COMPILED}
        if over and not args.dry_run:
            preset_settings.update(gap_steps=settings["steps"])
        report["checks"][name] = check_preset(name, device, preset_settings, diffusers_info, log)
    if device.type == "cuda":
        report["measured_minutes"] = measured_minutes(report)
    report["elapsed_s"] = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu-check.json").write_text(json.dumps(report, indent=1, default=_json_default))
    text = markdown(report)
    (args.out / "gpu-check.md").write_text(text)
    print("\n" + text)
    failed = report.get("tests", {}).get("returncode") not in (0, 5, None) and not args.dry_run
    return 1 if failed else 0


def measured_minutes(report: dict) -> dict:
    """Each notebook cell's minutes from this device's measured step and sampling times (presets the check
    trained; the others are left out)."""
    out = {}
    for cell, (name, steps, redraws, samples, sample_steps) in NOTEBOOK_CELLS.items():
        check = report["checks"].get(name)
        if check is None:
            continue
        cost = report["costs"][name]
        sampling = (check.get("sampling") or {}).get("ours")
        # a redraw samples `samples` images; the measured call was on a larger batch: an upper bound
        sample_step_s = sampling["ms_per_network_call"] / 1e3 if sampling else 0.0
        out[cell] = cell_minutes(cost, steps or cost["steps"], redraws, samples, sample_steps, 1.0, 0.0,
                                 train_step_s=check["ours"]["ms_per_step"] / 1e3, sample_step_s=sample_step_s)
    return out


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def prepare() -> int:
    """For the device (no network there): the wheels of diffusers and of importlib_metadata, the one dependency
    its image lacks (it has torch, numpy, huggingface_hub, safetensors, regex, requests, filelock, Pillow), into
    build/gpu-wheels (6.5 MB; carry it). For this machine: diffusers with its dependencies into build/gpu-deps."""
    pip = [sys.executable, "-m", "pip"]
    for cmd in (pip + ["download", "-q", "--no-deps", "-d", str(WHEELS), "diffusers", "importlib_metadata"],
                pip + ["install", "-q", "--upgrade", "--target", str(DEPS), "diffusers"]):
        print(" ".join(cmd[1:]), flush=True)
        if subprocess.run(cmd).returncode:
            return 1
    info, why = load_diffusers()
    print(f"diffusers {info[0]} ready: {DEPS} here, {WHEELS} for the device" if info else why)
    return 0 if info else 1


if __name__ == "__main__":
    sys.exit(main())
