"""Time to quality: digits-FID after 1, 2, 5 and 10 minutes of CPU time spent training, per contender.

    python bench/time_to_quality.py                         # the full run (budgets 1, 2, 5: 76 min at load ~5)
    python bench/time_to_quality.py --budgets 0.1 0.2 --samples 64 --draws 2     # a seconds-long try
    python bench/time_to_quality.py --contenders ours --ours "lr=2e-3" --ours "lr=1e-3" --budgets 1 2   # tuning
    python bench/time_to_quality.py --only inflation        # CPU time of a fixed workload: threads, load, wait policy

Contenders, each trained from scratch on the digits TRAIN split (1,437 images, 8x8) by its own library's recipe:

* **ours**: ``Trainer.from_config(ExperimentConfig.preset(--preset))`` (default ``digits_fast``, the recipe tuned for
  a CPU budget; ``--ours KEY=VALUE,...`` adds variants of it, ``--preset digits`` the recipe of the shipped model);
* **ours, plain resampling**: the same with ``model.resblock_updown=false`` (strided/nearest convolutions for the
  up- and downsampling, as diffusers and Improved DDPM, instead of ADM's residual blocks);
* **diffusers**: ``UNet2DModel`` of our widths, levels and attention (``train_speed.diffusers_twin``, its default
  dropout 0) trained as diffusers' unconditional training example does it (examples/unconditional_image_generation/
  train_unconditional.py, its defaults): ``DDPMScheduler(num_train_timesteps=1000)`` (linear betas, eps), MSE on
  eps, AdamW lr 1e-4, betas (0.95, 0.999), weight decay 1e-6, a cosine learning-rate schedule with 500 warm-up steps
  over 100 epochs of batch 16 (its training ends there), gradient clipping at 1, ``EMAModel`` (inv_gamma 1, power
  3/4, max decay 0.9999); no horizontal flips (a mirrored digit is not a digit). Sampled with its ``DDIMScheduler``
  (eta 0) from the same config: better than its ``DDPMScheduler`` at 50 steps for a fixed-variance model;
* **denoising-diffusion-pytorch** (lucidrains), if it installs: its ``Unet`` (dim 32, dim_mults (1, 2, 2): about our
  parameter count) and ``GaussianDiffusion`` with its defaults (v-prediction, sigmoid schedule, T = 1000), trained
  as its ``Trainer`` does (Adam lr 1e-4, betas (0.9, 0.99), batch 16, gradient clipping at 1, ``ema_pytorch.EMA``
  decay 0.995 updated every 10 steps); no horizontal flips; sampled with its DDIM (``sampling_timesteps``).

**The budget is CPU time**, not wall time: each contender runs in its own worker process with ``--threads`` torch
threads and stops when the CPU time of its process, divided by the threads, reaches the budget (so "1 minute" is
what one minute of two idle cores buys). Workers take turns, ``--slice`` CPU-seconds each, never at the same time:
a busy neighbour slows them alike and they never compete with each other. At each budget the worker saves its EMA
weights; FID is computed afterwards. OpenMP threads that wait for a descheduled sibling spin and bill CPU time:
``--only inflation`` measures it (a fixed workload at 1 and 2 threads, with and without two busy processes beside
it, OMP_WAIT_POLICY active or passive) and the run records the load average before, during and after.

FID: ``--samples`` samples of each snapshot (``--sample-steps`` network calls of the contender's own sampler) against
the 360 held-out TEST digits in the shipped digits feature network's space (``digits_fid.Scorer``), mean ± sd over
``--draws`` noise draws; the floor is as many TRAINING digits against the same test digits, over draws.

diffusers and denoising-diffusion-pytorch are not dependencies of ddpm_lite: the first run pip-installs them into
``build/bench-deps`` (denoising-diffusion-pytorch without its dependencies, with einops, ema-pytorch and accelerate).
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEPS = ROOT / "build" / "bench-deps"
BUDGETS = (1.0, 2.0, 5.0, 10.0)  # CPU minutes (per thread)
SHAPE = (1, 8, 8)
PLAIN = "ours, plain resampling"
DIFFUSERS = "diffusers"
LUCIDRAINS = "denoising-diffusion-pytorch"
LUCIDRAINS_PACKAGES = ("denoising-diffusion-pytorch", "ema-pytorch", "einops", "accelerate")
DIFFUSERS_EPOCHS, DIFFUSERS_BATCH, DIFFUSERS_WARMUP = 100, 16, 500  # the example's defaults
TARGET_MARGIN, TARGET_FLOOR_RATIO = 0.30, 1.5


def load_average() -> float:
    return os.getloadavg()[0]


def _add_deps() -> None:
    if str(DEPS) not in sys.path:
        sys.path.append(str(DEPS))  # appended: our numpy and torch come first


def install_lucidrains() -> bool:
    """denoising-diffusion-pytorch (and what it imports) into build/bench-deps, once; False when it cannot."""
    if not (DEPS / "denoising_diffusion_pytorch").exists():
        print(f"installing denoising-diffusion-pytorch into {DEPS} (once) ...", flush=True)
        done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(DEPS), "--no-deps",
                               *LUCIDRAINS_PACKAGES], check=False)
        if done.returncode != 0:
            return False
    _add_deps()
    try:
        import denoising_diffusion_pytorch  # noqa: F401
    except ImportError as error:
        print(f"denoising-diffusion-pytorch could not be imported ({error}): its row is left out", flush=True)
        return False
    return True


# --------------------------------------------------------------------------- the contenders (in the workers)


class Run:
    """One contender's training: ``train_until(cpu)`` trains until the process has used ``cpu`` seconds of CPU
    time per thread since training began; ``ema_state()`` the weights to sample from; ``sample(state, n, seed)``
    n digits in [-1, 1] with ``sample_steps`` network calls."""

    steps = 0
    finished = False  # the recipe's own schedule has ended (diffusers' example trains a fixed number of epochs)

    def __init__(self, threads: int, sample_steps: int):
        import torch

        self.threads, self.sample_steps = threads, sample_steps
        self.cpu0 = None
        self.cpu_elsewhere = 0.0  # process CPU seconds spent saving and sampling: not training
        self.torch = torch

    def cpu(self) -> float:
        return (time.process_time() - self.cpu0 - self.cpu_elsewhere) / self.threads

    def train_until(self, budget: float) -> None:
        if self.cpu0 is None:
            self.cpu0 = time.process_time()
        while not self.finished and self.cpu() < budget:
            self.step()
            self.steps += 1

    def step(self):
        raise NotImplementedError

    def network(self):
        """The trained network (for its parameter count)."""
        return self.model

    def ema_state(self) -> dict:
        raise NotImplementedError

    def sample(self, state: dict, n: int, seed: int):
        raise NotImplementedError


class OursRun(Run):
    """Our Trainer with a preset (and overrides)."""

    def __init__(self, threads, sample_steps, preset="digits_fast", overrides=()):
        super().__init__(threads, sample_steps)
        from ddpm_lite.configs import ExperimentConfig
        from ddpm_lite.train import StopTraining, Trainer

        self.config = ExperimentConfig.preset(preset).override(list(overrides))
        self.StopTraining = StopTraining
        self.trainer = Trainer.from_config(self.config, device="cpu", progress=False,
                                           callbacks=[self._stop_when_spent])
        self.budget = 0.0

    def network(self):
        return self.trainer.model

    def _stop_when_spent(self, trainer, step, logs):
        if self.cpu() >= self.budget:
            raise self.StopTraining

    def train_until(self, budget):
        if self.cpu0 is None:
            self.cpu0 = time.process_time()
        if self.cpu() < budget:
            self.budget = budget
            self.trainer.train(10 ** 9)
        self.steps = self.trainer.step

    def ema_state(self):
        return {k: v.clone() for k, v in self.trainer.ema.state_dict().items()}

    def sample(self, state, n, seed):
        from ddpm_lite.sampling import generate

        model = self.config.build_model()
        model.load_state_dict(state)
        return generate(model, self.trainer.diffusion, (n, *SHAPE), steps=self.sample_steps, device="cpu",
                        generator=self.torch.Generator().manual_seed(seed))


class _Epochs:
    """Batches of a shuffled training set, epoch after epoch (a DataLoader with shuffle=True, in memory)."""

    def __init__(self, images, batch: int, seed: int = 0):
        import torch

        self.images, self.batch = images, batch
        self.generator = torch.Generator().manual_seed(seed)
        self.order, self.position, self.epoch = None, len(images), -1

    def next(self):
        import torch

        if self.position >= len(self.images):
            self.order = torch.randperm(len(self.images), generator=self.generator)
            self.position, self.epoch = 0, self.epoch + 1
        index = self.order[self.position: self.position + self.batch]
        self.position += self.batch
        return self.images[index]

    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.images) / self.batch)


class DiffusersRun(Run):
    """diffusers' unconditional training example (its defaults) on the same-size UNet2DModel."""

    def __init__(self, threads, sample_steps):
        super().__init__(threads, sample_steps)
        import dataclasses

        import torch
        from train_speed import diffusers_twin, import_diffusers

        from ddpm_lite.data import load_dataset
        from ddpm_lite.models import UNetConfig

        _, UNet2DModel, DDPMScheduler = import_diffusers()
        from diffusers import DDIMScheduler
        from diffusers.optimization import get_scheduler
        from diffusers.training_utils import EMAModel

        torch.manual_seed(0)
        cfg = dataclasses.replace(UNetConfig.preset("digits8"), dropout=0.0)  # UNet2DModel's default dropout
        self.model = diffusers_twin(cfg, UNet2DModel)
        self.scheduler = DDPMScheduler(num_train_timesteps=1000)
        self.sampler = DDIMScheduler.from_config(self.scheduler.config)
        self.data = _Epochs(load_dataset("digits", "train").images, DIFFUSERS_BATCH)
        self.total_steps = self.data.batches_per_epoch() * DIFFUSERS_EPOCHS
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6,
                                           eps=1e-8)
        self.lr_scheduler = get_scheduler("cosine", optimizer=self.optimizer, num_warmup_steps=DIFFUSERS_WARMUP,
                                          num_training_steps=self.total_steps)
        self.ema = EMAModel(self.model.parameters(), inv_gamma=1.0, power=3 / 4, decay=0.9999, use_ema_warmup=True)

    def step(self):
        torch, F = self.torch, self.torch.nn.functional
        self.model.train()
        clean = self.data.next()
        noise = torch.randn(clean.shape)
        timesteps = torch.randint(0, self.scheduler.config.num_train_timesteps, (len(clean),)).long()
        noisy = self.scheduler.add_noise(clean, noise, timesteps)
        loss = F.mse_loss(self.model(noisy, timesteps), noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.ema.step(self.model.parameters())
        self.optimizer.zero_grad(set_to_none=True)
        self.finished = self.steps + 1 >= self.total_steps

    def ema_state(self):
        return {"shadow": [p.clone() for p in self.ema.shadow_params]}

    def sample(self, state, n, seed):
        import copy

        torch = self.torch
        model = copy.deepcopy(self.model).eval()
        for p, s in zip(model.parameters(), state["shadow"]):
            p.data.copy_(s)
        self.sampler.set_timesteps(self.sample_steps)
        x = torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            for t in self.sampler.timesteps:
                x = self.sampler.step(model(x, t.expand(n)), t, x, eta=0.0).prev_sample
        return x.clamp(-1, 1)


class LucidrainsRun(Run):
    """denoising-diffusion-pytorch's Unet and GaussianDiffusion, trained as its Trainer does."""

    def __init__(self, threads, sample_steps):
        super().__init__(threads, sample_steps)
        import torch

        _add_deps()
        from denoising_diffusion_pytorch import GaussianDiffusion, Unet
        from ema_pytorch import EMA

        from ddpm_lite.data import load_dataset

        torch.manual_seed(0)
        unet = Unet(dim=32, dim_mults=(1, 2, 2), channels=1)
        self.diffusion = GaussianDiffusion(unet, image_size=8, timesteps=1000, sampling_timesteps=sample_steps)
        self.data = _Epochs((load_dataset("digits", "train").images + 1) / 2, 16)  # it normalises [0, 1] itself
        self.optimizer = torch.optim.Adam(self.diffusion.parameters(), lr=1e-4, betas=(0.9, 0.99))
        self.ema = EMA(self.diffusion, beta=0.995, update_every=10)

    def network(self):
        return self.diffusion.model

    def step(self):
        self.diffusion.train()
        loss = self.diffusion(self.data.next())
        loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.diffusion.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.ema.update()

    def ema_state(self):
        return {k: v.clone() for k, v in self.ema.ema_model.state_dict().items()}

    def sample(self, state, n, seed):
        import copy

        model = copy.deepcopy(self.ema.ema_model).eval()
        model.load_state_dict(state)
        self.torch.manual_seed(seed)
        with self.torch.no_grad():
            return model.sample(batch_size=n) * 2 - 1


def make_run(spec: dict, threads: int, sample_steps: int) -> Run:
    kind = spec["kind"]
    if kind == "ours":
        return OursRun(threads, sample_steps, spec["preset"], spec.get("overrides", ()))
    if kind == "diffusers":
        return DiffusersRun(threads, sample_steps)
    if kind == "lucidrains":
        return LucidrainsRun(threads, sample_steps)
    raise ValueError(f"unknown contender kind {kind!r}")


def worker(conn, spec: dict, threads: int, sample_steps: int, workdir: str) -> None:
    """A contender's process: trains on command, saves EMA snapshots, samples them."""
    os.environ["TQDM_DISABLE"] = "1"  # denoising-diffusion-pytorch's sampling loop shows a bar
    import torch

    torch.set_num_threads(threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    run = make_run(spec, threads, sample_steps)
    conn.send({"ready": True, "parameters": sum(p.numel() for p in run.network().parameters())})
    wall = 0.0
    while True:
        command, arg = conn.recv()
        if command == "until":
            start = time.perf_counter()
            run.train_until(arg)
            wall += time.perf_counter() - start
            conn.send({"steps": run.steps, "cpu": run.cpu(), "wall": wall, "finished": run.finished})
            continue
        cpu = time.process_time()  # saving and sampling: left out of the training budget
        if command == "snapshot":
            torch.save({"state": run.ema_state(), "steps": run.steps, "cpu": run.cpu(), "wall": wall}, arg)
            reply = True
        elif command == "sample":
            path, n, seed = arg
            reply = run.sample(torch.load(path)["state"], n, seed).float()
        else:
            conn.send(None)
            return
        run.cpu_elsewhere += time.process_time() - cpu
        conn.send(reply)


# --------------------------------------------------------------------------- the run


def contender_specs(names, preset: str, variants) -> dict[str, dict]:
    specs = {}
    for name in names:
        if name == "ours":
            specs[f"ours ({preset})"] = {"kind": "ours", "preset": preset}
        elif name == "plain":
            specs[f"{PLAIN} ({preset})"] = {"kind": "ours", "preset": preset,
                                            "overrides": ["model.resblock_updown=false"]}
        elif name == "shipped":
            specs["ours (digits, the shipped recipe)"] = {"kind": "ours", "preset": "digits"}
        elif name == "diffusers":
            specs[DIFFUSERS] = {"kind": "diffusers"}
        elif name == "lucidrains":
            if install_lucidrains():
                specs[LUCIDRAINS] = {"kind": "lucidrains"}
    for variant in variants:
        specs[f"ours ({preset}) + {variant}"] = {"kind": "ours", "preset": preset,
                                                 "overrides": [v for v in variant.split(",") if v]}
    return specs


def start_workers(specs: dict, threads: int, sample_steps: int, workdir: Path) -> dict:
    context = multiprocessing.get_context("spawn")
    workers = {}
    for name, spec in specs.items():
        parent, child = context.Pipe()
        process = context.Process(target=worker, args=(child, spec, threads, sample_steps, str(workdir)),
                                  daemon=True)
        process.start()
        workers[name] = (process, parent)
    return workers


def run_all(workers: dict, data: dict, budgets: list[float], slice_s: float, workdir: Path, scorer, draws: int,
            on_budget=lambda data: None, log=print) -> None:
    """Train every contender to each budget (seconds of CPU per thread), taking turns of ``slice_s``; when all
    have reached a budget, score their snapshots (FID of ``draws`` noise draws) and call ``on_budget(data)``,
    so that a run stopped early keeps the budgets it finished. Fills data["snapshots"], ["fid"],
    ["load_during"] and ["budgets_done"]."""
    snapshots = data.setdefault("snapshots", {})
    fids = data.setdefault("fid", {})
    loads = data.setdefault("load_during", [])
    done = data.setdefault("budgets_done", [])
    for name, (_, conn) in workers.items():
        snapshots[name] = {"parameters": conn.recv()["parameters"]}
        fids[name] = {}
    marks = sorted(set(budgets) | {k * slice_s for k in range(1, int(max(budgets) / slice_s) + 1)})
    for mark in marks:
        for name, (_, conn) in workers.items():
            conn.send(("until", mark))
            status = conn.recv()
            if mark in budgets:
                path = workdir / f"{name.replace(' ', '_').replace('/', '_')}-{mark:g}.pt"
                conn.send(("snapshot", str(path)))
                conn.recv()
                snapshots[name][mark] = {**status, "path": str(path)}
                log(f"  {name}: {mark / 60:g} CPU-min: {status['steps']} steps, {status['cpu']:.0f} s CPU per "
                    f"thread in {status['wall']:.0f} s wall" + (" (its schedule ended)" if status["finished"] else ""))
        loads.append(load_average())
        if mark in budgets:
            for name, (_, conn) in workers.items():
                values = []
                for draw in range(draws):
                    conn.send(("sample", (snapshots[name][mark]["path"], scorer.samples, 1000 + draw)))
                    values.append(scorer.fid(conn.recv()))
                fids[name][mark] = values
                log(f"  {name}: {mark / 60:g} CPU-min: FID {fmt(values)}")
            done.append(mark)
            on_budget(data)


def stop_workers(workers: dict) -> None:
    for process, conn in workers.values():
        try:
            conn.send(("stop", None))
            conn.recv()
        except (BrokenPipeError, EOFError):
            pass
        process.join(timeout=30)


# --------------------------------------------------------------------------- CPU-time inflation


def _workload(threads: int, steps: int, queue) -> None:
    import torch

    from ddpm_lite.configs import ExperimentConfig
    from ddpm_lite.train import Trainer

    torch.set_num_threads(threads)
    trainer = Trainer.from_config(ExperimentConfig.preset("digits"), device="cpu", progress=False)
    trainer.train(3)  # warm-up
    cpu, wall = time.process_time(), time.perf_counter()
    trainer.train(steps)
    queue.put((time.process_time() - cpu, time.perf_counter() - wall))


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def inflation(steps: int = 30, log=print) -> list[dict]:
    """Process CPU seconds and wall seconds of ``steps`` training steps of the ``digits`` preset, at 1 and 2
    threads, alone and beside two busy processes, with OpenMP waiting threads spinning (the default) or passive."""
    context = multiprocessing.get_context("spawn")
    rows = []
    for policy in ("default", "passive"):
        for busy in (0, 2):
            for threads in (1, 2):
                saved = os.environ.get("OMP_WAIT_POLICY")
                if policy == "passive":
                    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
                queue = context.Queue()
                load_before = load_average()
                process = context.Process(target=_workload, args=(threads, steps, queue))
                process.start()
                spinners = [context.Process(target=_spin, args=(600,), daemon=True) for _ in range(busy)]
                for s in spinners:
                    s.start()
                cpu, wall = queue.get()
                process.join()
                for s in spinners:
                    s.terminate()
                    s.join()
                if saved is None:
                    os.environ.pop("OMP_WAIT_POLICY", None)
                else:
                    os.environ["OMP_WAIT_POLICY"] = saved
                row = {"policy": policy, "busy": busy, "threads": threads, "cpu": cpu, "wall": wall,
                       "load": load_before}
                rows.append(row)
                log(f"  OMP {policy:<7} +{busy} busy, {threads} thread(s): {cpu:6.2f} s CPU ({cpu / threads:6.2f} "
                    f"per thread), {wall:6.2f} s wall, load {load_before:.1f}")
    return rows


# --------------------------------------------------------------------------- report


def fmt(values) -> str:
    from digits_fid import mean_sd

    return mean_sd(values)


def report(data: dict) -> list[str]:
    budgets = data.get("budgets_done", data["budgets"])
    fids, snaps = data["fid"], data["snapshots"]
    floor = data["floor"]
    floor_mean = statistics.mean(floor)
    lines = [f"Machine: {data['machine']}",
             f"Load average (1 min): {data['load_before']:.1f} before, during {min(data['load_during']):.1f}-"
             f"{max(data['load_during']):.1f} (median {statistics.median(data['load_during']):.1f}), "
             f"{data['load_after']:.1f} after; {data['minutes']:.0f} min wall-clock. {data['threads']} torch "
             f"thread(s) per contender, OMP_WAIT_POLICY={data['omp_wait_policy']}, turns of {data['slice']:g} CPU-s.",
             "", f"FID of {data['samples']} samples ({data['sample_steps']} network calls) against the 360 test "
             f"digits, mean ± sd of {data['draws']} draws; floor ({data['samples']} training digits): "
             f"**{fmt(floor)}**", "",
             "| contender | params | " + " | ".join(f"{b / 60:g} CPU-min" for b in budgets) + " |",
             "|---|---|" + "---|" * len(budgets)]
    for name in fids:
        cells = []
        for b in budgets:
            s = snaps[name][b]
            cells.append(f"{fmt(fids[name][b])} ({s['steps']} steps{', its schedule ended' if s['finished'] else ''})")
        lines.append(f"| {name} | {snaps[name]['parameters'] / 1e6:.2f} M | " + " | ".join(cells) + " |")
    lines.append(f"| floor: {data['samples']} training digits | | " + " | ".join(fmt(floor) for _ in budgets) + " |")
    ours = next((n for n in fids if n.startswith("ours (") and "+" not in n and "shipped" not in n), None)
    peers = [n for n in fids if n in (DIFFUSERS, LUCIDRAINS)]  # the other libraries: the targets' peers
    ablations = [n for n in fids if n.startswith(PLAIN)]  # our own variant: reported, not a target
    if ours and (peers or ablations):
        lines.append("")
        for b in budgets:
            mine = statistics.mean(fids[ours][b])
            ratios = {p: mine / statistics.mean(fids[p][b]) for p in peers + ablations}
            words = [f"- {b / 60:g} CPU-min: {ours}'s FID / the other's: "
                     + ", ".join(f"{p} {r:.2f}" for p, r in ratios.items())]
            if peers:
                worst = max(ratios[p] for p in peers)
                words.append("lower than every peer" if worst < 1 else "**NOT lower than every peer**")
                if b == 120:
                    met = worst <= 1 - TARGET_MARGIN
                    words.append(f"target at 2 min, <= {1 - TARGET_MARGIN:.2f} against each peer: "
                                 f"**{'met' if met else 'not met'}**")
            words.append(f"{mine / floor_mean:.2f}x the floor")
            if b == 300:
                met = mine / floor_mean <= TARGET_FLOOR_RATIO
                words.append(f"target by 5 min, <= {TARGET_FLOOR_RATIO}x: **{'met' if met else 'not met'}**")
            lines.append("; ".join(words))
    return lines


def read_json(path: Path) -> dict:
    """A run's JSON with its budgets as numbers again (JSON keys are strings)."""
    data = json.loads(Path(path).read_text())

    def numbers(per: dict) -> dict:
        return {(float(k) if k.replace(".", "", 1).isdigit() else k): v for k, v in per.items()}

    data["fid"] = {name: numbers(per) for name, per in data["fid"].items()}
    data["snapshots"] = {name: numbers(per) for name, per in data["snapshots"].items()}
    return data


def figure(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullLocator

    fig, ax = plt.subplots(figsize=(7.5, 5.5), dpi=100)
    budgets = data.get("budgets_done", data["budgets"])
    minutes = [b / 60 for b in budgets]
    for name, per in data["fid"].items():
        means = [statistics.mean(per[b]) for b in budgets]
        sds = [statistics.stdev(per[b]) if len(per[b]) > 1 else 0 for b in budgets]
        ax.errorbar(minutes, means, yerr=sds, marker="o", capsize=3, label=name)
    floor = statistics.mean(data["floor"])
    ax.axhline(floor, color="k", ls="--", lw=1, label=f"floor: {data['samples']} real training digits")
    ax.axhline(TARGET_FLOOR_RATIO * floor, color="grey", ls=":", lw=1, label=f"{TARGET_FLOOR_RATIO}x the floor")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(minutes, [f"{m:g}" for m in minutes])
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    # minor ticks labelled at 2, 3 and 5 times a power of ten only, so that the labels never touch
    ax.yaxis.set_minor_formatter(FuncFormatter(
        lambda value, _: f"{value:g}" if f"{value:.0e}"[0] in "235" else ""))
    ax.set_xlabel(f"training budget: CPU minutes ({data['threads']} threads)", fontsize=12)
    ax.set_ylabel("digits-FID against the test digits", fontsize=12)
    ax.tick_params(which="both", labelsize=12)
    ax.legend(fontsize=12, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    ax.set_title("Time to quality on the 8x8 digits", fontsize=12)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=list(BUDGETS), help="CPU minutes per thread")
    parser.add_argument("--contenders", nargs="+", default=["ours", "plain", "diffusers", "lucidrains"],
                        choices=["ours", "plain", "shipped", "diffusers", "lucidrains"])
    parser.add_argument("--preset", default="digits_fast", help="our preset (default digits_fast)")
    parser.add_argument("--ours", action="append", default=[], metavar="KEY=VALUE,...",
                        help="a variant of our preset (config overrides); repeat for several")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per contender (default 2)")
    parser.add_argument("--omp-wait-policy", choices=["default", "passive", "active"], default="passive",
                        help="OMP_WAIT_POLICY of the workers (default passive: waiting threads sleep, do not bill)")
    parser.add_argument("--slice", type=float, default=15.0, help="CPU seconds per turn (default 15)")
    parser.add_argument("--samples", type=int, default=640, help="samples per FID (default 640)")
    parser.add_argument("--draws", type=int, default=3, help="noise draws per FID (default 3)")
    parser.add_argument("--sample-steps", type=int, default=50, help="network calls per sample (default 50)")
    parser.add_argument("--only", choices=["inflation", "train"], help="only measure the CPU-time inflation")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    parser.add_argument("--figure", type=Path, help="write the FID-against-CPU-minutes figure here")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "time_to_quality", help="snapshots' folder")
    parser.add_argument("--from-json", type=Path, metavar="JSON",
                        help="train nothing: print the report (and draw --figure) of a run's JSON")
    args = parser.parse_args(argv)
    if args.from_json:
        data = read_json(args.from_json)
        print("\n".join(report(data)))
        if args.figure:
            figure(data, args.figure)
        return data
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import torch
    from digits_fid import Scorer
    from machine import describe

    start = time.perf_counter()

    def write(data):
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(data, indent=1))

    torch.set_num_threads(args.threads)
    data = {"machine": describe(), "load_before": load_average(), "threads": args.threads,
            "omp_wait_policy": args.omp_wait_policy, "slice": args.slice, "samples": args.samples,
            "draws": args.draws, "sample_steps": args.sample_steps}
    print(f"Machine: {data['machine']}; load average {data['load_before']:.1f}", flush=True)
    if args.only == "inflation":
        data["inflation"] = inflation()
    else:
        if args.omp_wait_policy != "default":
            os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
        budgets = [b * 60 for b in args.budgets]
        data["budgets"] = budgets
        specs = contender_specs(args.contenders, args.preset, args.ours)
        data["contenders"] = specs
        args.work.mkdir(parents=True, exist_ok=True)
        scorer = Scorer(args.samples)
        data["floor"] = scorer.floor(max(args.draws, 5))

        def on_budget(data):  # a report of the budgets done so far: a run cut short keeps them
            data["load_after"] = load_average()
            data["minutes"] = (time.perf_counter() - start) / 60
            lines = report(data)
            print(f"\n# --- markdown for docs/benchmarks.md ({data['minutes']:.0f} min so far) ---\n"
                  + "\n".join(lines), flush=True)
            if args.figure:
                figure(data, args.figure)
            write(data)

        workers = start_workers(specs, args.threads, args.sample_steps, args.work)
        try:
            run_all(workers, data, budgets, args.slice, args.work, scorer, args.draws, on_budget)
        finally:
            stop_workers(workers)
    write(data)
    return data


if __name__ == "__main__":
    main()
