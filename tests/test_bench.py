"""The benchmark scripts run: bench/claims.py end to end on its seconds-long profile, the timing and FLOP
helpers of bench/train_speed.py (diffusers, which the benchmark installs for itself, is not needed here), and
bench/sampler_speed.py end to end on tiny settings (without k-diffusion, which it installs for itself)."""
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import claims  # noqa: E402
import sampler_speed  # noqa: E402
import train_speed  # noqa: E402

from ddpm_lite.models import UNetConfig, UNetModel  # noqa: E402


def test_claims_smoke_profile_writes_report_json_and_figures(tmp_path):
    claims.main(["--profile", "smoke", "--out", str(tmp_path)])
    report = (tmp_path / "results-smoke.md").read_text()
    for heading in ("1. Cosine vs linear", "2. Learned vs fixed variance", "3. Importance sampling",
                    "4. Classifier guidance", "5. Bits/dim", "Floor"):
        assert heading in report
    data = json.loads((tmp_path / "results-smoke.json").read_text())
    runs = {r["name"] for r in data["results"]}
    assert runs == set(claims.RUNS) | {"guidance"}
    simple = next(r for r in data["results"] if r["name"] == "cosine-simple")
    assert set(simple["bpd"]) == {"fixed_small", "fixed_large"} and simple["bpd"]["fixed_small"]["mean"] > 0
    for name in ("fid_vs_steps", "guidance", "vb_terms", "vlb_loss"):
        assert (tmp_path / f"{name}-smoke.png").stat().st_size > 5000


def test_loss_noise_separates_a_noisy_curve_from_a_smooth_one():
    g = torch.Generator().manual_seed(0)
    trend = torch.linspace(2, 1, 400)
    smooth = (trend * (1 + 0.01 * torch.randn(400, generator=g))).tolist()
    noisy = (trend * torch.exp(torch.randn(400, generator=g))).tolist()
    assert claims.loss_noise(noisy) > 10 * claims.loss_noise(smooth)


def test_mean_sd_formats_one_or_several_seeds():
    assert claims.mean_sd([1.23456]) == "1.235"
    assert claims.mean_sd([1.0, 3.0]) == "2.000 ± 1.414"


def test_training_step_changes_the_weights_and_counts_three_forward_passes_of_flops():
    """Backward costs about twice the forward (a published rule for convolutions and matmuls): a training step's
    FLOPs are ~3x the forward's."""
    from torch.utils.flop_counter import FlopCounterMode

    model = UNetModel(UNetConfig.preset("digits8", learn_sigma=True))
    before = [p.detach().clone() for p in model.parameters()]
    train_speed.train_step_fn(model, 8)()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(train_speed.TRAIN_BATCH, 1, 8, 8), torch.zeros(train_speed.TRAIN_BATCH, dtype=torch.long))
    forward = counter.get_total_flops() / 1e9
    assert train_speed.gflops_per_step(model, 8) == pytest.approx(3 * forward, rel=0.05)


def test_interleaved_timing_returns_a_median_per_function():
    calls = {"a": 0, "b": 0}

    def bump(name):
        def fn():
            calls[name] += 1
            sum(range(2000))
        return fn

    result = train_speed.interleaved({"a": bump("a"), "b": bump("b")}, rounds=3, per_round=2, warmup=1)
    assert set(result) == {"a", "b"} and all(v >= 0 for v in result.values())
    assert calls == {"a": 7, "b": 7}  # 1 warm-up + 3 rounds of 2


def test_sampler_speed_runs_every_part_on_tiny_settings_and_merges_runs(tmp_path, capsys):
    first, second = tmp_path / "fid.json", tmp_path / "all.json"
    tiny = ["--samples", "70", "--draws", "2", "--rounds", "1", "--threads", "1", "--no-kdiffusion"]
    sampler_speed.main(["--only", "spacing", "reference", "fid", "--steps", "2", "3", "--spacing-steps", "2",
                        "--reference-steps", "4", "--json", str(first), *tiny])
    sampler_speed.main(["--only", "timing", "wins", "--steps", "2", "3", "--reference-steps", "4",
                        "--wins-steps", "2", "--merge", str(first), "--json", str(second), *tiny])
    data = sampler_speed._int_keys(json.loads(second.read_text()))
    names = ["ancestral", "DDIM η=0", "DPM-Solver++(2M)"]
    assert list(data["fid"]) == names and list(data["seconds"]) == names
    assert all(len(data["fid"][name][k]) == 2 and data["seconds"][name][k][0] > 0 for name in names for k in (2, 3))
    assert set(data["spacing"]) == {"logSNR", "time_uniform", "time_quadratic", "time_uniform, final x_0 call",
                                    "time_uniform, final x_0 call, 2nd order to the end"}
    assert data["reference"]["steps"] == 4 and len(data["reference"]["fids"]) == 2 and data["reference_seconds"]
    assert len(data["floor"]) == 5 and data["wins"]["max_abs_difference"] < 1e-4
    report = capsys.readouterr().out.split("# --- markdown for docs/benchmarks.md ---")[-1]
    for text in ("timestep spacing", "| calls | ancestral | DDIM η=0 | DPM-Solver++(2M) |", "4-step ancestral: FID",
                 "Target: FID <= 1.1 x", "Cheap wins", "Floor: 70 training digits"):
        assert text in report
