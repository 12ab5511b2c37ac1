"""Few-step sampling of the shipped ``digits`` model: FID and seconds for 64 digits, per sampler and step count.

    python bench/sampler_speed.py                      # everything below (about 90 minutes on 2 shared cores)
    python bench/sampler_speed.py --only spacing       # DPM-Solver++(2M)'s timestep spacings at 5-20 steps
    python bench/sampler_speed.py --only fid timing --steps 5 10 20 --no-kdiffusion
    python bench/sampler_speed.py --only fid --samplers "k-diff Euler" --json a.json   # one sampler; then
    python bench/sampler_speed.py --only timing wins --merge a.json b.json              # report runs together

The shipped ``digits`` model (ADM U-Net, cosine schedule, T = 1000, learned variance), unchanged, sampled by:

* ours: ancestral (DDPM Algorithm 2 with the learned variances, respaced), DDIM eta = 0 (``generate(ddim=True)``,
  as the library respaces for it) and DPM-Solver++(2M) (``generate(sampler="dpm++2m")``, ``ddpm_lite.dpm_solver``);
* k-diffusion's DPM++ 2M, Euler and Heun (``sample_dpmpp_2m``, ``sample_euler``, ``sample_heun``) on the same
  network through k-diffusion's own ``OpenAIDenoiser`` wrapper (eps channels of the learned-variance output,
  fractional timesteps from its sigma <-> t interpolation), at Karras et al.'s noise levels (rho = 7, from EDM's
  sigma_max = 80 down to the chain's sigma_min, then 0), and DPM++ 2M also at ``get_sigmas(n)`` (evenly spaced in
  t from t = T-1, then 0); k-diffusion does not clip x_0 (see :func:`kdiffusion`), so its final samples are clamped
  to [-1, 1]. Heun costs two network calls per step but the last: at a budget of
  ``steps`` calls it takes (steps + 1) // 2 steps.

Columns are network calls (NFE); every sampler of a draw starts from the same x_T.

* **FID**: digits-FID (``ddpm_lite.metrics``, the shipped digits feature network) of ``--samples`` samples against
  the 360 held-out TEST digits, mean ± sd over ``--draws`` noise draws; the floor is as many TRAINING digits
  (random draws) against the same test digits: what a perfect sampler would score at this sample size. The
  1000-step ancestral sampler, with the same draws, is the quality target.
* **seconds for 64**: wall-clock seconds to sample 64 digits on ``--threads`` threads, the median of ``--rounds``
  rounds in which all contenders alternate (so a busy neighbour slows them alike), with the process CPU time per
  thread beside it (less sensitive to other processes on a shared machine).

``--only spacing`` compares DPM-Solver++(2M)'s timestep choices (:func:`ddpm_lite.dpm_solver.solver_timesteps`)
and the final denoising call, which set the solver's defaults. ``--only wins`` times cheap variants that keep the
math (``torch.inference_mode``, a loop that skips ``p_mean_variance``'s unused outputs).

k-diffusion is not a dependency of ddpm_lite: the first run installs it with pip into ``build/bench-deps``
without its dependencies (only ``torchsde``, ``torchdiffeq``, ``trampoline`` and ``safetensors``, which its
``sampling`` module imports), and imports its ``sampling`` and ``external`` modules alone.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from digits_fid import Scorer, mean_sd  # bench/digits_fid.py
from machine import describe  # bench/machine.py

from ddpm_lite.dpm_solver import DEFAULT_SPACING, SPACINGS, dpm_solver_sample_loop, solver_plan, solver_timesteps
from ddpm_lite.pretrained import load_pretrained
from ddpm_lite.sampling import generate

ROOT = Path(__file__).resolve().parent.parent
DEPS = ROOT / "build" / "bench-deps"
KDIFF_PACKAGES = ("k-diffusion", "torchsde", "torchdiffeq", "trampoline", "safetensors")
SHAPE = (1, 8, 8)
TIMING_BATCH = 64
STEPS = (5, 8, 10, 15, 20, 25, 50, 100)
SPACING_STEPS = (5, 8, 10, 15, 20)
REFERENCE_STEPS = 1000  # the quality target: ancestral sampling with every step of the chain
TARGET_SECONDS, TARGET_RATIO = 0.5, 1.1
KARRAS_SIGMA_MAX = 80.0  # EDM's (Karras et al. 2022)


# --------------------------------------------------------------------------- k-diffusion, installed for the bench


def import_kdiffusion(install: bool = True):
    """k-diffusion's ``sampling`` and ``external`` modules (without its package ``__init__``, which imports its
    training stack), pip-installed into build/bench-deps on first use; None when unavailable."""
    if not (DEPS / "k_diffusion").exists():
        if not install:
            return None
        print(f"installing k-diffusion into {DEPS} (once, without its training dependencies) ...", flush=True)
        done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(DEPS), "--no-deps",
                               *KDIFF_PACKAGES], check=False)
        if done.returncode != 0:
            print("k-diffusion could not be installed: its rows are left out", flush=True)
            return None
    if str(DEPS) not in sys.path:
        sys.path.append(str(DEPS))  # appended: our numpy and torch come first
    if "k_diffusion" not in sys.modules:
        package = DEPS / "k_diffusion"
        spec = importlib.util.spec_from_file_location("k_diffusion", package / "__init__.py",
                                                      submodule_search_locations=[str(package)])
        sys.modules["k_diffusion"] = importlib.util.module_from_spec(spec)  # a bare package: __init__ not run
    try:
        return importlib.import_module("k_diffusion.sampling"), importlib.import_module("k_diffusion.external")
    except ImportError as error:
        print(f"k-diffusion could not be imported ({error}): its rows are left out", flush=True)
        return None


# --------------------------------------------------------------------------- the contenders


@dataclass(frozen=True)
class Contender:
    """A sampler: ``run(seed, n, steps)`` -> ``n`` samples in [-1, 1] from the starting noise
    :func:`starting_noise` (seed, n) with (at most) ``steps`` network calls; ``calls(steps)`` is the exact count."""
    name: str
    run: Callable[[int, int, int], torch.Tensor]
    calls: Callable[[int], int] = lambda steps: steps


def starting_noise(seed: int, n: int) -> torch.Tensor:
    """x_T: the first draw of a generator seeded with ``seed``, which is what generate() draws first."""
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


def ours(model, diffusion) -> list[Contender]:
    def via_generate(**kwargs):
        def run(seed, n, steps):
            return generate(model, diffusion, (n, *SHAPE), steps=steps, device="cpu",
                            generator=torch.Generator().manual_seed(seed), **kwargs)
        return run

    return [Contender("ancestral", via_generate()),
            Contender("DDIM η=0", via_generate(sampler="ddim")),
            Contender("DPM-Solver++(2M)", via_generate(sampler="dpm++2m"))]


def kdiffusion(model, diffusion, modules) -> list[Contender]:
    """k-diffusion's samplers on our model through its OpenAIDenoiser at Karras et al.'s noise levels (rho = 7)
    between the chain's sigma_min and EDM's sigma_max = 80, and DPM++ 2M at ``denoiser.get_sigmas(n)`` too (evenly
    spaced in t from t = T-1, as our solver's default spacing, then 0).

    k-diffusion does not clip x_0. From t = T-1 (alpha = 4.9e-5 on the capped cosine chain, sigma = 20291) the
    network's eps error is multiplied by alpha_next / alpha_{T-1} (270 for 100 steps evenly spaced in t) and the
    samples are lost (FID about 41 at any step count); our solver clips x_0 and does not suffer it. Starting at
    sigma = 80 (alpha = 0.0125) avoids it; Karras' ramp from the chain's own sigma_max puts almost every level above
    sigma = 10 (FID 35-48 at 5-10 calls)."""
    sampling, external = modules
    denoiser = external.OpenAIDenoiser(model, diffusion, quantize=False, has_learned_sigmas=True)
    sigma_min = float(denoiser.sigma_min)

    def karras(n):
        return sampling.get_sigmas_karras(n, sigma_min, KARRAS_SIGMA_MAX, rho=7.0)

    def with_sampler(fn, sigmas_for=denoiser.get_sigmas, heun=False):
        @torch.no_grad()
        def run(seed, n, steps):
            count = (steps + 1) // 2 if heun else steps  # Heun: 2 calls per step, 1 for the last (to sigma = 0)
            sigmas = sigmas_for(count)
            out = fn(denoiser, starting_noise(seed, n) * sigmas[0], sigmas, disable=True)
            return out.clamp(-1, 1)
        return run

    model.eval()
    return [Contender("k-diff DPM++ 2M Karras", with_sampler(sampling.sample_dpmpp_2m, karras)),
            Contender("k-diff Euler Karras", with_sampler(sampling.sample_euler, karras)),
            Contender("k-diff Heun Karras", with_sampler(sampling.sample_heun, karras, heun=True),
                      calls=lambda steps: 2 * ((steps + 1) // 2) - 1),
            Contender("k-diff DPM++ 2M", with_sampler(sampling.sample_dpmpp_2m))]


def spacing_contenders(model, diffusion) -> list[Contender]:
    """DPM-Solver++(2M) with each timestep spacing; with the default spacing and a final denoising call (the last
    call returns the x_0 prediction at t = 0), without and with the second-order update up to the last step."""
    def solver(spacing, **options):
        @torch.no_grad()
        def run(seed, n, steps):
            return dpm_solver_sample_loop(diffusion, model, (n, *SHAPE), steps, noise=starting_noise(seed, n),
                                          spacing=spacing, **options).clamp(-1, 1)
        return run

    out = [Contender(spacing, solver(spacing)) for spacing in SPACINGS]
    return out + [Contender(f"{DEFAULT_SPACING}, final x_0 call", solver(DEFAULT_SPACING, denoise_final=True)),
                  Contender(f"{DEFAULT_SPACING}, final x_0 call, 2nd order to the end",
                            solver(DEFAULT_SPACING, denoise_final=True, lower_order_final=False))]


# --------------------------------------------------------------------------- FID


def fid_sweep(contenders: list[Contender], steps, scorer: Scorer, draws: int, progress=True,
              checkpoint: Callable[[dict], None] | None = None) -> dict:
    """{name: {steps: [FID per draw]}}; ``checkpoint(results)`` after each FID (to save partial results)."""
    results = {c.name: {} for c in contenders}
    for draw in range(draws):
        for c in contenders:
            for k in steps:
                start = time.perf_counter()
                with torch.no_grad():
                    samples = c.run(1000 + draw, scorer.samples, k)
                fid = scorer.fid(samples)
                results[c.name].setdefault(k, []).append(fid)
                if checkpoint is not None:
                    checkpoint(results)
                if progress:
                    print(f"  draw {draw}: {c.name:<34} {k:>5} calls  FID {fid:7.3f}  "
                          f"({time.perf_counter() - start:5.1f} s)", flush=True)
    return results


# --------------------------------------------------------------------------- timing


def timing(contenders: list[Contender], steps, rounds: int) -> dict:
    """{name: {steps: (median wall seconds, median CPU seconds per thread)}} for 64 samples, contenders
    alternating within each round."""
    jobs = [(c, k) for k in steps for c in contenders]
    with torch.no_grad():
        for c, k in jobs[: len(contenders)]:  # warm-up: one call each
            c.run(99, TIMING_BATCH, min(k, 2))
    wall = {(c.name, k): [] for c, k in jobs}
    cpu = {(c.name, k): [] for c, k in jobs}
    threads = torch.get_num_threads()
    for _ in range(rounds):
        for c, k in jobs:
            start, start_cpu = time.perf_counter(), time.process_time()
            with torch.no_grad():
                c.run(99, TIMING_BATCH, k)
            wall[(c.name, k)].append(time.perf_counter() - start)
            cpu[(c.name, k)].append((time.process_time() - start_cpu) / threads)
    out = {c.name: {} for c in contenders}
    for (name, k), values in wall.items():
        out[name][k] = (statistics.median(values), statistics.median(cpu[(name, k)]))
    return out


def wins(model, diffusion, steps: int, rounds: int) -> dict:
    """Seconds for 64 samples of DPM-Solver++(2M) at ``steps`` calls: as shipped (no_grad, through
    p_mean_variance), under torch.inference_mode, and a bare loop that computes only x_0 from the eps channels
    (the same update; x_0 agrees to float32 rounding)."""
    abar = diffusion.alphas_cumprod
    plan = solver_plan(abar, solver_timesteps(abar, steps + 1))  # the default: steps steps, no final x_0 call
    coef = [(float(np.sqrt(1 / abar[t])), float(np.sqrt(1 / abar[t] - 1))) for t in plan.timesteps]

    def bare(noise):
        x, previous = noise, None
        for i in range(plan.network_calls):
            eps = model(x, torch.full((len(x),), plan.timesteps[i], dtype=torch.long))[:, : x.shape[1]]
            x0 = (x * coef[i][0] - eps * coef[i][1]).clamp(-1, 1)
            x = x * plan.scale[i] + x0 * plan.weight_current[i]
            if previous is not None:
                x = x - previous * plan.weight_previous[i]
            previous = x0
        return x.clamp(-1, 1)

    def shipped(noise):
        return dpm_solver_sample_loop(diffusion, model, tuple(noise.shape), steps, noise=noise)

    variants = {"shipped (no_grad, p_mean_variance)": (torch.no_grad, shipped),
                "inference_mode": (torch.inference_mode, shipped),
                "bare x_0 loop (no_grad)": (torch.no_grad, bare),
                "bare x_0 loop + inference_mode": (torch.inference_mode, bare)}
    with torch.no_grad():
        noise = starting_noise(99, TIMING_BATCH)
        difference = float((bare(noise) - shipped(noise)).abs().max())
    contenders = [Contender(name, lambda seed, n, k, mode=mode, fn=fn: mode()(fn)(starting_noise(seed, n)))
                  for name, (mode, fn) in variants.items()]
    result = timing(contenders, [steps], rounds)
    return {"steps": steps, "rounds": rounds, "max_abs_difference": difference,
            "seconds": {name: result[name][steps] for name in variants}}


# --------------------------------------------------------------------------- report


def table_lines(fids: dict, seconds: dict, calls: dict, steps) -> list[str]:
    names = list(fids)
    lines = ["| calls | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for k in steps:
        cells = []
        for name in names:
            if k not in fids[name]:
                cells.append("")
                continue
            cell = mean_sd(fids[name][k])
            if name in seconds and k in seconds[name]:
                cell += f" / {seconds[name][k][0]:.2f} s"
            if calls[name](k) != k:
                cell += f" ({calls[name](k)} calls)"
            cells.append(cell)
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return lines


def target_lines(data: dict) -> list[str]:
    reference, steps = data["reference"]["fids"], data["reference"]["steps"]
    bound = TARGET_RATIO * statistics.mean(reference)
    seconds = data.get("seconds", {})
    ref_seconds = data.get("reference_seconds")
    lines = [f"\n{steps}-step ancestral: FID {mean_sd(reference)}"
             + (f", {ref_seconds[0]:.1f} s for 64 (CPU per thread {ref_seconds[1]:.1f} s)" if ref_seconds else "")
             + f". Target: FID <= {TARGET_RATIO} x {statistics.mean(reference):.3f} = {bound:.3f} in < "
               f"{TARGET_SECONDS} s for 64."]
    for name, fids in data.get("fid", {}).items():
        good = [k for k in sorted(fids) if statistics.mean(fids[k]) <= bound]
        if not good:
            best = min(fids, key=lambda k: statistics.mean(fids[k]))
            lines.append(f"- {name}: no step count reaches it (best: {mean_sd(fids[best])} at {best} calls).")
            continue
        k = good[0]
        wall = seconds.get(name, {}).get(k)
        verdict = "" if wall is None else (f", {wall[0]:.2f} s wall / {wall[1]:.2f} s CPU per thread for 64: "
                                           f"**{'met' if wall[0] < TARGET_SECONDS else 'not met'}**")
        lines.append(f"- {name}: first reaches it at {k} calls (FID {mean_sd(fids[k])}){verdict}.")
    return lines


def report(data: dict, rounds: int) -> list[str]:
    lines = [f"Machine: {data['machine']}", f"Floor: {data['samples']} training digits against the test digits: "
             f"FID {mean_sd(data['floor'])} ({len(data['floor'])} draws)."]

    def calls(name):
        return lambda k: data.get("calls", {}).get(name, {}).get(k, k)

    if "spacing" in data:
        steps = sorted({k for per in data["spacing"].values() for k in per})
        lines += [f"\n### DPM-Solver++(2M): timestep spacing (FID of {data['samples']}, mean ± sd of "
                  f"{data['draws']} draws)", ""]
        lines += table_lines(data["spacing"], {}, {name: calls(name) for name in data["spacing"]}, steps)
    if "fid" in data or "seconds" in data:
        fids = data["fid"] if "fid" in data else {name: {} for name in data["seconds"]}
        steps = sorted({k for per in list(fids.values()) + list(data.get("seconds", {}).values()) for k in per})
        lines += [f"\n### FID of {data['samples']} samples against the test digits (mean ± sd of {data['draws']} "
                  f"noise draws) / wall-clock seconds for {TIMING_BATCH} (median of {rounds} rounds), by network "
                  "calls", ""]
        lines += table_lines(fids, data.get("seconds", {}), {name: calls(name) for name in fids}, steps)
        if "seconds" in data:
            lines += ["", f"CPU seconds per thread for {TIMING_BATCH} (median): " + "; ".join(
                f"{name} " + ", ".join(f"{k}: {s[1]:.2f}" for k, s in sorted(per.items()))
                for name, per in data["seconds"].items())]
    if "reference" in data:
        lines += target_lines(data)
    if "wins" in data:
        result = data["wins"]
        lines += [f"\n### Cheap wins: DPM-Solver++(2M), {result['steps']} calls, {TIMING_BATCH} samples (median "
                  f"of {result['rounds']} rounds; the bare loop's samples differ by at most "
                  f"{result['max_abs_difference']:.1e})", "", "| variant | wall s | CPU s per thread |",
                  "|---|---|---|"]
        lines += [f"| {name} | {w:.3f} | {c:.3f} |" for name, (w, c) in result["seconds"].items()]
    return lines


def figure(data: dict, path: Path) -> None:
    """FID (mean, sd over the draws as error bars) against network calls, log x labelled with the step counts run,
    with the 1000-step ancestral FID, the target (1.1x it) and the real-data floor as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.6), layout="constrained")
    steps = sorted({k for per in data["fid"].values() for k in per})
    for name, per in data["fid"].items():
        ks = sorted(per)
        calls = [data.get("calls", {}).get(name, {}).get(k, k) for k in ks]
        ax.errorbar(calls, [statistics.mean(per[k]) for k in ks], yerr=[statistics.stdev(per[k]) for k in ks],
                    marker="o", ms=4, capsize=3, label=name, ls="--" if name.startswith("k-diff") else "-")
    if "reference" in data:
        ref = statistics.mean(data["reference"]["fids"])
        ax.axhline(ref, color="black", lw=1, label=f"{data['reference']['steps']}-step ancestral ({ref:.2f})")
        ax.axhspan(0, TARGET_RATIO * ref, color="tab:green", alpha=0.08,
                   label=f"target: within {TARGET_RATIO}x ({TARGET_RATIO * ref:.2f})")
    floor = statistics.mean(data["floor"])
    ax.axhline(floor, color="gray", lw=1, ls=":", label=f"real digits (floor, {floor:.2f})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(steps, [str(k) for k in steps])
    ax.minorticks_off()
    yticks = [0.7, 1, 1.5, 2, 3, 5, 10, 20, 40]
    ax.set_yticks(yticks, [f"{v:g}" for v in yticks])
    ax.set_ylim(0.6, 50)
    ax.set_xlabel("network calls (NFE)")
    ax.set_ylabel(f"FID of {data['samples']} samples (log scale)")
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncol=3, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _int_keys(tree):
    """JSON turned the step counts into strings: turn them back."""
    if isinstance(tree, dict):
        return {int(k) if isinstance(k, str) and k.isdigit() else k: _int_keys(v) for k, v in tree.items()}
    return tree


def _merge(into: dict, new: dict) -> dict:
    """Merge the per-sampler tables ("fid", "seconds", "calls", "spacing") sampler by sampler; other keys replace."""
    for key, value in new.items():
        if key in ("fid", "seconds", "calls", "spacing") and isinstance(into.get(key), dict):
            into[key].update(value)
        else:
            into[key] = value
    return into


PARTS = ("spacing", "reference", "fid", "timing", "wins")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=PARTS, nargs="+", help="run only these parts (default: all)")
    parser.add_argument("--steps", type=int, nargs="+", default=list(STEPS), help="network calls (the table)")
    parser.add_argument("--spacing-steps", type=int, nargs="+", default=list(SPACING_STEPS))
    parser.add_argument("--samples", type=int, default=640, help="samples per FID (default 640)")
    parser.add_argument("--draws", type=int, default=3, help="noise draws per FID (default 3)")
    parser.add_argument("--reference-steps", type=int, default=REFERENCE_STEPS,
                        help="steps of the ancestral quality target (default 1000)")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the timings (default 2)")
    parser.add_argument("--fid-threads", type=int, default=1,
                        help="torch threads while sampling for FID (default 1: the least hurt by busy neighbours)")
    parser.add_argument("--wins-steps", type=int, default=10, help="network calls of the cheap-wins timing")
    parser.add_argument("--no-kdiffusion", action="store_true", help="leave out k-diffusion's samplers")
    parser.add_argument("--samplers", nargs="+", help="only these samplers of the table (names as in its header)")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    parser.add_argument("--merge", type=Path, nargs="+", default=[],
                        help="numbers of earlier runs (--json files) to report with this run's")
    parser.add_argument("--figure", type=Path, help="draw FID against network calls here (PNG)")
    parser.add_argument("--report", action="store_true",
                        help="run nothing: report (and --figure) the --merge files only")
    args = parser.parse_args(argv)
    if args.report:
        data = {}
        for path in args.merge:
            _merge(data, _int_keys(json.loads(path.read_text())))
        print("\n".join(report(data, args.rounds)))
        if args.figure:
            figure(data, args.figure)
        return
    parts = set(args.only or PARTS)
    start = time.perf_counter()
    data = {}
    for path in args.merge:
        _merge(data, _int_keys(json.loads(path.read_text())))
    torch.set_num_threads(args.threads)
    machine = f"{describe()}; load average at the start {os.getloadavg()[0]:.1f}."
    print(machine, flush=True)
    data["machine"] = machine  # this run's: the timings depend on the load
    data.update(samples=args.samples, draws=args.draws)
    model, diffusion, _ = load_pretrained("digits", device="cpu")
    model.eval()
    scorer = Scorer(args.samples)
    data["floor"] = scorer.floor(max(args.draws, 5))

    def save(key=None, value=None):
        if key is not None:
            _merge(data, {key: value})
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(data, indent=1))

    contenders = []
    if parts & {"fid", "timing"}:
        contenders = ours(model, diffusion)
        modules = None if args.no_kdiffusion else import_kdiffusion()
        if modules is not None:
            contenders += kdiffusion(model, diffusion, modules)
        if args.samplers:
            unknown = set(args.samplers) - {c.name for c in contenders}
            if unknown:
                parser.error(f"unknown samplers {sorted(unknown)}: choose from {[c.name for c in contenders]}")
            contenders = [c for c in contenders if c.name in args.samplers]
        save("calls", {c.name: {k: c.calls(k) for k in args.steps} for c in contenders})
    # the seconds first, on the machine as the run found it (they depend on the load; the FIDs do not: seeded,
    # one thread), with the load average around them
    if "timing" in parts:
        loads = [os.getloadavg()[0]]
        save("seconds", timing(contenders, args.steps, args.rounds))
        ancestral = ours(model, diffusion)[0]
        data["reference_seconds"] = timing([ancestral], [args.reference_steps], 1)["ancestral"][args.reference_steps]
        data["timing_load"] = loads + [os.getloadavg()[0]]
        save()
        print(f"timing done, load average {data['timing_load'][0]:.1f} before, {data['timing_load'][1]:.1f} after",
              flush=True)
    if "wins" in parts:
        data["wins"] = wins(model, diffusion, args.wins_steps, args.rounds)
        save()

    torch.set_num_threads(args.fid_threads)
    if "spacing" in parts:
        fid_sweep(spacing_contenders(model, diffusion), args.spacing_steps, scorer, args.draws,
                  checkpoint=lambda results: save("spacing", results))
    if "fid" in parts:
        fid_sweep(contenders, args.steps, scorer, args.draws, checkpoint=lambda results: save("fid", results))
    if "reference" in parts:  # the longest part last
        ancestral = ours(model, diffusion)[0]
        data["reference"] = {"steps": args.reference_steps, "fids": fid_sweep(
            [ancestral], [args.reference_steps], scorer, args.draws)["ancestral"][args.reference_steps]}
    save()

    lines = report(data, args.rounds) + [f"\n(this run: {(time.perf_counter() - start) / 60:.1f} minutes)"]
    print("\n# --- markdown for docs/benchmarks.md ---\n" + "\n".join(lines))
    if args.figure and "fid" in data:
        figure(data, args.figure)


if __name__ == "__main__":
    main()
