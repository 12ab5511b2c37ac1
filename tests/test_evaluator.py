"""The reference evaluator's table (FID, sFID, IS, precision, recall): spatial features, evaluate_samples, the CLI."""
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ddpm_lite import cli
from ddpm_lite.data import load_dataset
from ddpm_lite.metrics import (
    EvaluationFeatures,
    InceptionV3Features,
    SampleEvaluation,
    evaluate_samples,
    evaluation_features,
    extract_features,
    fid_from_features,
    inception_score_from_logits,
    load_digits_feature_net,
    precision_recall,
)
from ddpm_lite.metrics.features import DIGITS_CHECKPOINT, DigitsFeatureNet

TINY = ["--set", "model.model_channels=16", "--set", "model.num_res_blocks=1", "--set", "model.num_head_channels=16",
        "--set", "diffusion.num_timesteps=20", "--batch-size", "16", "--no-progress"]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train").images, load_dataset("digits", "test").images


@pytest.fixture(scope="module")
def net():
    return load_digits_feature_net()


# --------------------------------------------------------------------------- spatial features


def test_digits_spatial_features_against_float64_convolutions(net, digits):
    """The shipped weights load unchanged; the pooled features and logits are those of forward/logits; the
    spatial features are the first 7 channels of the 4x4 map after the fourth convolution, recomputed here in
    float64 from the state dict."""
    checkpoint = torch.load(DIGITS_CHECKPOINT, map_location="cpu", weights_only=True)
    assert set(net.state_dict()) == set(checkpoint["state_dict"])
    x = digits[1][:50]
    with torch.no_grad():
        pool, spatial, logits = net.evaluation_features(x)
        assert torch.equal(pool, net(x)) and torch.equal(logits, net.logits(x))
        assert torch.equal(spatial, net.spatial_features(x))
    sd = {k: v.double() for k, v in checkpoint["state_dict"].items()}
    h = x.double()
    for i in (0, 2):
        h = F.silu(F.conv2d(h, sd[f"body.{i}.weight"], sd[f"body.{i}.bias"], padding=1))
    h = F.max_pool2d(h, 2)
    for i in (5, 7):
        h = F.silu(F.conv2d(h, sd[f"body.{i}.weight"], sd[f"body.{i}.bias"], padding=1))
    assert h.shape[1:] == (64, 4, 4) and spatial.shape == (50, 7 * 4 * 4) == (50, net.spatial_dim)
    np.testing.assert_allclose(spatial.double().numpy(), h[:, :7].flatten(1).numpy(), rtol=1e-5, atol=1e-5)


def test_inception_spatial_features_and_logits_with_random_weights():
    """Random weights (no download): pool = forward; spatial = the first 7 channels of Mixed_6d (17x17);
    logits = torchvision's own classifier on the same input; the state dict has no new entries."""
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    net = InceptionV3Features(weights=None)
    reference = inception_v3(weights=None, aux_logits=True, transform_input=True, init_weights=False).eval()
    state = {k: v for k, v in net.net.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = net.fc_weight, net.fc_bias
    reference.load_state_dict(state)
    assert not any(k.startswith("fc") for k in net.state_dict())  # cached FID statistics keep their key
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        pool, spatial, logits = net.evaluation_features(x)
        assert torch.equal(pool, net(x))
        prepared = (F.interpolate((x + 1) / 2, size=(299, 299), mode="bilinear", align_corners=False) - net.mean) \
            / net.std
        torch.testing.assert_close(logits, reference(prepared), rtol=1e-4, atol=1e-4)
        h = reference._transform_input(prepared)
        for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
                     "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
                     "Mixed_6c"):
            h = getattr(reference, name)(h)
        branch = reference.Mixed_6d.branch1x1(h)  # the graph's mixed_6/conv: the first channels of mixed_6
    assert branch.shape[1:] == (192, 17, 17) and spatial.shape == (2, 2023) == (2, net.spatial_dim)
    torch.testing.assert_close(spatial, branch[:, :7].flatten(1), rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- evaluate_samples


def test_evaluate_samples_is_the_composition_of_the_metrics(net, digits):
    train, test = digits
    fake = train[:200]
    result = evaluate_samples(fake, test, net, split_size=64)
    f_fake, f_real = extract_features(fake, net), extract_features(test, net)
    with torch.no_grad():
        s_fake, s_real = net.spatial_features(fake).numpy(), net.spatial_features(test).numpy()
        logits = net.logits(fake).numpy()
    assert result.fid == pytest.approx(fid_from_features(f_fake, f_real), rel=1e-6)
    assert result.sfid == pytest.approx(fid_from_features(s_fake, s_real), rel=1e-6)
    assert result.inception_score == pytest.approx(inception_score_from_logits(logits, 64), rel=1e-6)
    pr = precision_recall(f_real, f_fake)
    assert (result.precision, result.recall) == (pr.precision, pr.recall)
    assert (result.num_samples, result.num_reference) == (200, 360)
    # precomputed features give the same numbers
    again = evaluate_samples(evaluation_features(fake, net), evaluation_features(test, net), split_size=64)
    assert again == result


def test_real_against_real_is_at_the_floor(net, digits):
    train, test = digits
    same = evaluate_samples(test, test, net)
    assert same.fid == pytest.approx(0, abs=1e-8) and same.sfid == pytest.approx(0, abs=1e-8)
    assert same.precision == same.recall == 1.0
    floor = evaluate_samples(train[:360], test, net)
    assert floor.fid < 3 and floor.sfid < 4
    assert floor.precision > 0.8 and floor.recall > 0.75
    assert 5 < floor.inception_score <= 10


def test_noise_degrades_every_metric(net, digits):
    train, test = digits
    ref = evaluation_features(test, net)
    clean = evaluate_samples(train[:360], ref, net)
    noise = torch.randn(train[:360].shape, generator=torch.Generator().manual_seed(0))
    noisy = evaluate_samples((train[:360] + 1.0 * noise).clamp(-1, 1), ref, net)
    assert noisy.fid > clean.fid + 10 and noisy.sfid > clean.sfid + 5
    assert noisy.inception_score < clean.inception_score - 2
    assert noisy.precision < clean.precision - 0.2 and noisy.recall < clean.recall - 0.1


def test_a_network_without_spatial_features_or_logits_leaves_those_out(digits):
    train, test = digits
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 8))
    result = evaluate_samples(train[:50], test[:50], plain)
    assert result.sfid is None and result.inception_score is None and result.fid > 0
    table = result.table()
    assert re.search(r"^sFID\s+n/a$", table, re.M) and re.search(r"^Inception Score\s+n/a$", table, re.M)


def test_table_has_one_line_per_metric_and_the_floor_column():
    a = SampleEvaluation(12.3456, 7.5, 3.25, 0.5, 0.25, 100, 360)
    b = SampleEvaluation(1.0, 2.0, 7.0, 0.9, 0.85, 100, 360)
    lines = a.table(b, "real train").splitlines()
    assert lines[0].split() == ["metric", "samples", "real", "train"]
    assert lines[1].split() == ["FID", "12.3456", "1.0000"]
    assert [line.split()[0] for line in lines[1:]] == ["FID", "sFID", "Inception", "Precision", "Recall", "images"]
    assert lines[-1].split() == ["images", "100", "vs", "360", "100", "vs", "360"]
    assert a.as_dict()["fid"] == 12.3456
    assert isinstance(evaluation_features(torch.zeros(4, 1, 8, 8), DigitsFeatureNet()), EvaluationFeatures)


# --------------------------------------------------------------------------- the CLI


TABLE = re.compile(r"^(FID|sFID|Inception Score|Precision|Recall)\s+([0-9.]+)\s+([0-9.]+)$", re.M)


def test_cli_evaluate_a_tiny_checkpoint_and_sample_files(tmp_path, capsys, digits):
    out = tmp_path / "run"
    assert cli.main(["train", "--preset", "digits", "--steps", "2", "--out", str(out), *TINY]) == 0
    capsys.readouterr()
    assert cli.main(["evaluate", "--checkpoint", str(out), "--num", "24", "--steps", "3", "--ddim",
                     "--no-progress"]) == 0
    text = capsys.readouterr().out
    rows = dict((name, (float(a), float(b))) for name, a, b in TABLE.findall(text))
    assert set(rows) == {"FID", "sFID", "Inception Score", "Precision", "Recall"}, text
    assert rows["FID"][0] > rows["FID"][1]  # an untrained model is worse than real digits
    assert "24 samples of" in text and "3 DDIM steps" in text and "24 vs 360" in text

    # samples from a file: the reference sample format (NHWC uint8 under arr_0) and a .pt tensor
    test = digits[1]
    nhwc = ((test[:100] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.savez(tmp_path / "real.npz", arr_0=nhwc)
    torch.save(test[:100].clone(), tmp_path / "real.pt")
    for name in ("real.npz", "real.pt"):
        assert cli.main(["evaluate", "--samples", str(tmp_path / name), "--no-floor", "--no-progress"]) == 0
        text = capsys.readouterr().out
        fid = float(re.search(r"^FID\s+([0-9.]+)$", text, re.M).group(1))
        precision = float(re.search(r"^Precision\s+([0-9.]+)$", text, re.M).group(1))
        assert fid < 3 and precision > 0.9, text  # real test digits against the test split


def test_cli_evaluate_user_errors_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    np.savez(tmp_path / "flat.npz", arr_0=np.zeros((5, 64), dtype=np.uint8))
    torch.save(torch.full((6, 1, 8, 8), 3.0), tmp_path / "range.pt")
    torch.save(torch.zeros(6, 1, 8, 8), tmp_path / "ok.pt")
    cases = [
        (["--samples", str(tmp_path / "bad.npz")], "cannot be read"),
        (["--samples", str(tmp_path / "flat.npz")], "not a batch of images"),
        (["--samples", str(tmp_path / "range.pt")], "in [-1, 1]"),
        (["--samples", str(tmp_path / "missing.npz")], "no such file"),
        (["--samples", str(tmp_path / "ok.pt"), "--steps", "5"], "--steps sets the sampler"),
        (["--samples", str(tmp_path / "ok.pt"), "--features", "inception"], "inception_v3_google-0cc3c7bd.pth"),
        (["--checkpoint", "ddpm_lite/checkpoints/digits_classifier.pt"], "noisy classifier"),
        (["--checkpoint", "ddpm_lite/checkpoints/digits.pt", "--eta", "0.5"], "add --ddim"),
    ]
    for argv, match in cases:
        assert cli.main(["evaluate", *argv, "--no-progress"]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and match in err, (argv, err)
