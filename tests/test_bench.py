"""The benchmark scripts run: bench/claims.py end to end on its seconds-long profile, the timing and FLOP
helpers of bench/train_speed.py (diffusers, which the benchmark installs for itself, is not needed here),
bench/sampler_speed.py end to end on tiny settings (without k-diffusion, which it installs for itself), and
bench/time_to_quality.py on our contender alone for a one-second budget."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import claims  # noqa: E402
import sampler_speed  # noqa: E402
import train_speed  # noqa: E402

from ddpm_lite.models import UNetConfig, UNetModel  # noqa: E402


def test_claims_smoke_profile_writes_report_json_and_figures(tmp_path):
    claims.main(["--profile", "smoke", "--out", str(tmp_path), "--work", str(tmp_path / "work")])
    report = (tmp_path / "results-smoke.md").read_text()
    for heading in ("1. Cosine vs linear", "2. Learned vs fixed variance", "3. Importance sampling",
                    "4. Classifier guidance", "5. Bits/dim", "Floor"):
        assert heading in report
    data = json.loads((tmp_path / "results-smoke.json").read_text())
    runs = {r["name"] for r in data["results"]}
    assert runs == set(claims.RUNS) | {"guidance"}
    simple = next(r for r in data["results"] if r["name"] == "cosine-simple")
    assert set(simple["bpd"]) == {"fixed_small", "fixed_large"} and simple["bpd"]["fixed_small"]["mean"] > 0
    for name in ("fid_vs_steps", "variance_fit", "guidance", "vb_terms", "vlb_loss"):
        assert (tmp_path / f"{name}-smoke.png").stat().st_size > 5000
    # claim 2: three models, a fit of each hybrid one, every variant at every step count and seed, paired tests
    variance = data["variance"]
    assert {(r["kind"], r["T"]) for r in variance["training"]} == {(k, 1000) for k in claims.VARIANCE_MODELS}
    assert set(variance["fits"]) == {"hybrid-v-T1000", "hybrid-T1000"} and len(variance["floor"]) == 2
    table = claims.variance_table(variance["samples"], 1000)
    assert set(table) == set(claims.VARIANTS)
    assert all(set(table[v][k]) == {0, 1} for v in table for k in (2, 3))
    assert set(table["learned"][4]) == {0} and 4 not in table["oracle"]  # the long steps: LONG_VARIANTS, seed 0
    assert "#### T = 1000: FID (digits features), paired difference to learned Σ" in report and "p = " in report
    # the same cells in pixel space: the pixel Frechet distance and the samples' total variance, with the floor
    for metric in ("pfd", "spread", "feature_spread"):
        cells = claims.variance_table(variance["samples"], 1000, metric)
        assert {(v, k): set(s) for v, c in cells.items() for k, s in c.items()} == \
            {(v, k): set(s) for v, c in table.items() for k, s in c.items()}
        assert all(x > 0 for c in cells.values() for s in c.values() for x in s.values())
        assert f"#### T = 1000: {claims.METRICS[metric]}, paired difference" in report
    assert len(variance["pixel"]["pfd"]) == 2 and abs(variance["pixel"]["spread"] - 19.0) < 0.05
    assert variance["pixel"]["feature_spread"] > 0
    perfect = report.split("#### A perfect model of Gaussian digits")[1]  # the closed form, one row per Sigma
    from ddpm_lite.course.analytic import SAMPLER_VARIANCES

    assert all(f"| {label} | " in perfect for label in SAMPLER_VARIANCES.values())
    assert "| 2 steps | 3 steps |" in perfect
    assert (tmp_path / "pixel_vs_steps-smoke.png").stat().st_size > 5000
    assert (tmp_path / "work" / "hybrid-v-T1000.pt").exists()


@pytest.mark.filterwarnings("ignore:Matrix is singular")  # the digits' corner pixels never vary: scipy warns, and
def test_pixel_measures_against_numpy():  # its square root still agrees with ours to 1e-6 (asserted below)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6)) * np.array([1.0, 2.0, 0.5, 1.0, 3.0, 0.1])
    assert claims.spread(x) == pytest.approx(np.trace(np.cov(x.T)), rel=1e-12)
    images = torch.from_numpy(x.reshape(50, 1, 2, 3)).float()
    assert np.array_equal(claims._pixels(images), images.double().numpy().reshape(50, 6))
    profile = claims.replace(claims.PROFILES["smoke"], variance_samples=5000)  # more than the training set: all of it
    floor = claims.pixel_floor(profile)
    from scipy.linalg import sqrtm

    from ddpm_lite.data import load_dataset

    train, test = (load_dataset("digits", split).images.reshape(-1, 64).double().numpy() for split in ("train", "test"))
    s1, s2 = np.cov(train.T), np.cov(test.T)  # the Frechet distance written out, scipy's matrix square root
    expected = np.sum((train.mean(0) - test.mean(0)) ** 2) + np.trace(s1 + s2 - 2 * sqrtm(s1 @ s2).real)
    assert floor["pfd"] == pytest.approx([expected] * 2, rel=1e-6)
    assert floor["spread"] == pytest.approx(np.trace(np.cov(test.T)), rel=1e-12)


def test_claims_runs_one_claim_alone(tmp_path):
    claims.main(["--profile", "smoke", "--claims", "3", "--out", str(tmp_path)])
    report = (tmp_path / "results-smoke-claims3.md").read_text()
    assert "3. Importance sampling" in report and "2. Learned" not in report and "5. Bits/dim" not in report
    assert json.loads((tmp_path / "results-smoke-claims3.json").read_text())["claims"] == [3]
    with pytest.raises(SystemExit):
        claims.main(["--claims", "7"])


def test_paired_test_against_a_float64_computation():
    a = [1.30, 1.10, 1.45, 1.22]
    b = [1.00, 1.02, 1.20, 1.05]
    d = [x - y for x, y in zip(a, b)]
    n, mean = len(d), sum(d) / len(d)
    sd = (sum((x - mean) ** 2 for x in d) / (n - 1)) ** 0.5
    t_stat = mean / (sd / n ** 0.5)
    from scipy import stats

    out = claims.paired_test(a, b)
    assert out["mean"] == pytest.approx(mean) and out["sd"] == pytest.approx(sd)
    assert out["p"] == pytest.approx(2 * stats.t.sf(abs(t_stat), n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / n ** 0.5  # 3.182 for 3 degrees of freedom
    assert half == pytest.approx(3.1824463 * sd / 2, rel=1e-6)
    assert (out["low"], out["high"]) == pytest.approx((mean - half, mean + half))
    assert claims.paired_test([1.0], [2.0]) is None
    assert claims.paired_test([1.0, 2.0], [1.0, 2.0])["p"] == 1.0


def test_variance_table_reads_results_and_their_json():
    results = [{"name": "variance-sample", "T": 1000, "variant": "learned", "fid": {0: {25: 1.5, 50: 1.2}}},
               {"name": "variance-sample", "T": 1000, "variant": "learned", "fid": {1: {25: 1.7}}},
               {"name": "variance-sample", "T": 4000, "variant": "ddim", "fid": {0: {25: 3.0}}}]
    expected = {"learned": {25: {0: 1.5, 1: 1.7}, 50: {0: 1.2}}}
    assert claims.variance_table(results, 1000) == expected
    assert claims.variance_table(json.loads(json.dumps(results)), 1000) == expected


def test_variance_jobs_of_a_profile_with_chosen_variants_one_job_per_seed(tmp_path):
    profile = claims.PROFILES["full-lite"]
    jobs = claims.variance_sampling_jobs(profile, tmp_path)
    wanted = {(T, v) for T in profile.variance_chains for v in claims.variance_variants(profile, T)}
    assert {(job[1], job[2]) for job in jobs} == wanted
    assert "oracle" not in claims.variance_variants(profile, 1000)
    assert "learned-paper" not in claims.variance_variants(profile, 4000)
    assert len(jobs) == len(wanted) * len(profile.variance_seeds)
    seeds = [job[3][0][0] for job in jobs]  # one (seed, steps) per job, seed-major
    assert all(len(job[3]) == 1 for job in jobs) and seeds == sorted(seeds)
    # the full profile: every variant, one job for all its seeds
    full = claims.variance_sampling_jobs(claims.PROFILES["full"], tmp_path)
    assert {job[2] for job in full} == set(claims.VARIANTS) and all(len(job[3]) == 3 for job in full)


def _cells(profiles, tmp_path):
    """{(T, variant, seed, steps)} the profiles sample."""
    return {(job[1], job[2], seed, k) for name in profiles
            for job in claims.variance_sampling_jobs(claims.PROFILES[name], tmp_path)
            for seed, steps in job[3] for k in steps}


def test_the_lite_runs_together_sample_every_cell_the_issue_asks_for_once(tmp_path):
    runs = ["full-lite", "full-lite-same", "full-lite-rest", "full-lite-long"]
    cells = [_cells([name], tmp_path) for name in runs]
    assert sum(map(len, cells[2:])) == len(set().union(*cells[2:]))  # the later runs sample nothing twice
    assert not set().union(*cells[:2]) & set().union(*cells[2:])  # nor anything the first two did
    everything = set().union(*cells)
    for T in (1000, 4000):
        for variant in set(claims.VARIANTS) - ({"learned-paper"} if T == 4000 else set()):
            for k in (25, 50, 100, 250, 1000):
                assert {(T, variant, seed, k) for seed in (0, 1, 2)} <= everything, (T, variant, k)
    assert all(claims.PROFILES[name].variance_samples * 3 >= 1000 for name in runs)


def _claim2_doc(cells: dict, floor=(1.0, 1.1, 1.2), samples=334) -> dict:
    """A results JSON of a claim-2 run with FIDs {(T, variant, seed, steps): fid}."""
    records = {}
    for (T, variant, seed, k), fid in cells.items():
        records.setdefault((T, variant), {"name": "variance-sample", "T": T, "variant": variant, "fid": {}})
        records[(T, variant)]["fid"].setdefault(str(seed), {})[str(k)] = fid
    profile = dict(json.loads(json.dumps(claims.asdict(claims.PROFILES["full-lite"]))), variance_samples=samples)
    return {"profile": profile, "minutes": 1.0, "machine": "test", "variance": {
        "fits": {}, "floor": list(floor), "samples": list(records.values()), "training": [], "data": "digits"}}


def test_merge_joins_runs_and_pairs_the_cells_they_share():
    a = _claim2_doc({(1000, "learned", 0, 25): 2.0, (1000, "learned", 1, 25): 2.4, (1000, "ddim", 0, 25): 3.0,
                     (1000, "ddim", 1, 25): 3.1})
    b = _claim2_doc({(1000, "learned", 0, 25): 2.0, (1000, "learned", 1, 25): 2.4, (1000, "oracle", 0, 25): 1.5,
                     (1000, "oracle", 1, 25): 1.8, (4000, "learned", 0, 250): 1.7})
    profile, variance = claims.merge_variance([a, b])
    assert profile.variance_chains == (1000, 4000)
    table = claims.variance_table(variance["samples"], 1000)
    assert table == {"learned": {25: {0: 2.0, 1: 2.4}}, "ddim": {25: {0: 3.0, 1: 3.1}},
                     "oracle": {25: {0: 1.5, 1: 1.8}}}
    assert claims.variance_table(variance["samples"], 4000) == {"learned": {250: {0: 1.7}}}
    report = "\n".join(claims.variance_report(variance, profile))
    assert "-0.550 [" in report  # oracle minus learned, paired over the two seeds: (-0.5 - 0.6) / 2
    # a measure that learned Sigma lacks at T (runs before the measure existed) gets no table there
    ddim = next(r for r in variance["samples"] if r["variant"] == "ddim")
    ddim["pfd"] = {"0": {"25": 0.9}}
    assert "pixel Fréchet distance" not in "\n".join(claims.variance_report(variance, profile))
    next(r for r in variance["samples"] if r["variant"] == "learned" and r["T"] == 1000)["pfd"] = {"0": {"25": 0.8}}
    report = "\n".join(claims.variance_report(variance, profile))
    assert "#### T = 1000: pixel Fréchet distance" in report and "#### T = 4000: pixel" not in report
    assert "+0.100 (n = 1)" in report


def test_merge_refuses_runs_that_do_not_pair(tmp_path):
    a = _claim2_doc({(1000, "learned", 0, 25): 2.0})
    with pytest.raises(ValueError, match="seed 0, 25 steps"):
        claims.merge_variance([a, _claim2_doc({(1000, "learned", 0, 25): 2.1})])
    with pytest.raises(ValueError, match="variance_samples"):
        claims.merge_variance([a, _claim2_doc({(1000, "ddim", 0, 25): 2.1}, samples=1000)])
    with pytest.raises(ValueError, match="floor"):
        claims.merge_variance([a, _claim2_doc({(1000, "ddim", 0, 25): 2.1}, floor=(9.0, 9.0, 9.0))])
    paths = []
    for i, doc in enumerate([a, _claim2_doc({(1000, "learned", 0, 25): 2.1})]):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(doc))
    with pytest.raises(SystemExit) as stop:  # one line, no traceback
        claims.main(["--merge", *map(str, paths), "--out", str(tmp_path / "out")])
    assert stop.value.code == 2
    claims.main(["--merge", str(paths[0]), "--out", str(tmp_path / "out"), "--name", "one"])
    assert (tmp_path / "out" / "results-one-claims2.md").exists()
    log = tmp_path / "jobs-stopped.jsonl"  # the jobs a stopped run finished
    log.write_text(json.dumps(_claim2_doc({(1000, "ddim", 0, 25): 3.0})["variance"]["samples"][0]) + "\n"
                   + json.dumps({"name": "variance-model"}) + "\n")
    claims.main(["--merge", str(log), str(paths[0]), "--out", str(tmp_path / "out"), "--name", "two"])
    joined = json.loads((tmp_path / "out" / "results-two-claims2.json").read_text())["variance"]
    assert claims.variance_table(joined["samples"], 1000) == {"learned": {25: {0: 2.0}}, "ddim": {25: {0: 3.0}}}
    with pytest.raises(SystemExit):  # a job log alone: no profile, no floor
        claims.main(["--merge", str(log), "--out", str(tmp_path / "out")])
    assert (tmp_path / "out" / "fid_vs_steps-one.png").exists()


def test_chains_runs_claim_2_for_some_chain_lengths_under_its_own_name(tmp_path):
    for argv in (["--chains", "4000", "--claims", "2"], ["--chains", "1000"]):  # not the profile's; not claim 2
        with pytest.raises(SystemExit) as stop:
            claims.main(["--profile", "smoke", "--out", str(tmp_path), *argv])
        assert stop.value.code == 2
    claims.main(["--profile", "smoke", "--claims", "2", "--chains", "1000", "--out", str(tmp_path), "--work",
                 str(tmp_path / "work")])
    result = json.loads((tmp_path / "results-smoke-T1000-claims2.json").read_text())
    assert result["profile"]["variance_chains"] == [1000]
    assert (tmp_path / "work" / "jobs-smoke-T1000.jsonl").read_text().count("variance-sample") == len(
        claims.variance_sampling_jobs(claims.PROFILES["smoke"], tmp_path))


def test_variants_samples_only_the_chosen_variants_under_their_own_name(tmp_path):
    with pytest.raises(SystemExit) as stop:  # claim 2 alone
        claims.main(["--profile", "smoke", "--variants", "ddim", "--out", str(tmp_path)])
    assert stop.value.code == 2
    claims.main(["--profile", "smoke", "--claims", "2", "--variants", "ddim", "learned", "--out", str(tmp_path),
                 "--work", str(tmp_path / "work")])
    result = json.loads((tmp_path / "results-smoke-learned-ddim-claims2.json").read_text())
    assert set(claims.variance_table(result["variance"]["samples"], 1000)) == {"learned", "ddim"}
    # --steps: some step counts of the same models (--reuse), under its own name; --merge pairs the runs, every
    # measure of a cell sampled twice the same in both (the noise is seeded)
    with pytest.raises(SystemExit) as stop:
        claims.main(["--profile", "smoke", "--claims", "2", "--steps", "0", "--out", str(tmp_path)])
    assert stop.value.code == 2
    claims.main(["--profile", "smoke", "--claims", "2", "--variants", "ddim", "learned", "--steps", "3", "--reuse",
                 "--out", str(tmp_path), "--work", str(tmp_path / "work")])
    again = json.loads((tmp_path / "results-smoke-learned-ddim-steps-3-claims2.json").read_text())
    assert claims.variance_table(again["variance"]["samples"], 1000)["learned"] == {3: {0: pytest.approx(
        claims.variance_table(result["variance"]["samples"], 1000)["learned"][3][0], rel=1e-9), 1: pytest.approx(
        claims.variance_table(result["variance"]["samples"], 1000)["learned"][3][1], rel=1e-9)}}
    _, merged = claims.merge_variance([result, again])
    for metric in claims.METRICS:
        assert claims.variance_table(merged["samples"], 1000, metric) == claims.variance_table(
            result["variance"]["samples"], 1000, metric)


def test_saved_config_predating_a_new_field_is_the_same_config():
    from ddpm_lite.configs import ExperimentConfig

    config = ExperimentConfig.preset("digits", seed=0)
    saved = config.to_dict()
    assert claims._same_config(saved, config)
    # a file written before the field "steps" existed: it counts as its default (the preset's value here)
    assert claims._same_config({k: v for k, v in saved.items() if k != "steps"}, config)
    assert not claims._same_config(dict(saved, steps=saved["steps"] + 1), config)
    assert not claims._same_config(dict(saved, unknown=1), config)


def test_v_preconditioned_loss_reweights_only_the_variance_term():
    """vb of step t is (1 / delta_t^2) times the library's vb computed with the clipped x_0; the eps term is the
    library's; delta_t = log(beta_t / beta~_t) from the betas in float64."""
    import numpy as np

    from ddpm_lite import GaussianDiffusion, get_betas

    base = GaussianDiffusion(get_betas("cosine", 50), var_type="learned_range", loss_type="rescaled_mse")
    pre = claims.v_preconditioned(base)
    model = UNetModel(UNetConfig.preset("digits8", learn_sigma=True, model_channels=16, num_head_channels=16))
    torch.nn.init.normal_(model.out[-1].weight, std=0.05)
    x0 = torch.rand(6, 1, 8, 8) * 2 - 1
    t = torch.tensor([0, 1, 2, 10, 30, 49])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    ours = pre.training_losses(model, x0, t, noise=noise)
    ref = base.training_losses(model, x0, t, noise=noise)
    torch.testing.assert_close(ours["mse"], ref["mse"])
    betas = np.asarray(base.betas, dtype=np.float64)
    abar = np.cumprod(1 - betas)
    abar_prev = np.append(1.0, abar[:-1])
    beta_tilde = betas * (1 - abar_prev) / (1 - abar)
    beta_tilde[0] = beta_tilde[1]  # the clipped first step, as the library's log-variance
    weight = 1.0 / np.log(betas / beta_tilde) ** 2
    x_t = base.q_sample(x0, t, noise)
    out = model(x_t, t)
    frozen = torch.cat([out[:, :1].detach(), out[:, 1:]], dim=1)
    vb = base._vb_terms_bpd(lambda *args, **kwargs: frozen, x0, x_t, t, clip_denoised=True)["output"]
    expected = vb * torch.from_numpy(np.minimum(weight, 1e12)[t.numpy()]).float() * 50 / 1000
    torch.testing.assert_close(ours["vb"], expected, rtol=1e-4, atol=0)
    assert weight[1] < weight[30]  # delta is largest at small t
    with pytest.raises(ValueError, match="preconditioned hybrid loss"):
        claims.v_preconditioned(GaussianDiffusion(get_betas("cosine", 50))).training_losses(model, x0, t)


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


def test_time_to_quality_tiny_run_then_its_report_from_the_json(tmp_path, monkeypatch):
    """bench/time_to_quality.py end to end on one contender and a one-second budget, then --from-json."""
    import time_to_quality

    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # main() sets it for its workers; restored afterwards
    out = tmp_path / "ttq.json"
    data = time_to_quality.main(["--contenders", "ours", "--budgets", "0.02", "--samples", "64", "--draws", "2",
                                 "--sample-steps", "3", "--slice", "1.2", "--work", str(tmp_path / "work"),
                                 "--json", str(out), "--figure", str(tmp_path / "ttq.png")])
    name = "ours (digits_fast)"
    assert data["budgets_done"] == [1.2] and data["snapshots"][name][1.2]["steps"] > 0
    assert data["snapshots"][name][1.2]["cpu"] >= 1.2 and len(data["fid"][name][1.2]) == 2
    again = time_to_quality.read_json(out)
    assert again["fid"] == data["fid"] and (tmp_path / "ttq.png").stat().st_size > 0
    assert "| ours (digits_fast) | 1.37 M |" in "\n".join(time_to_quality.report(again))


def test_time_to_quality_report_of_the_recorded_run_states_the_targets():
    import time_to_quality

    lines = "\n".join(time_to_quality.report(time_to_quality.read_json(ROOT / "docs/benchmarks/time_to_quality.json")))
    assert "target at 2 min, <= 0.70 against each peer: **met**" in lines
    assert "target by 5 min, <= 1.5x: **met**" in lines and "NOT lower" not in lines
    for budget in (1, 2, 5, 10):  # the one run has every budget, and ours is lower than every peer at each
        assert f"- {budget} CPU-min: ours (digits_fast)'s FID / the other's" in lines
    assert lines.count("lower than every peer") == 4
