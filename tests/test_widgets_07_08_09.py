"""The widgets of notebooks 07-09, headless: every control changes the picture, and the numbers shown are the
package's (unet_summary, sample_quality, degrade + FID)."""
import ipywidgets as W
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from ddpm_lite.course.evaluate import degrade, sample_quality  # noqa: E402
from ddpm_lite.course.widgets import FIDExplorer, GuidanceExplorer, TrainingMonitor, UNetExplorer  # noqa: E402
from ddpm_lite.data import load_dataset  # noqa: E402
from ddpm_lite.metrics import extract_features, fid_from_features, load_digits_feature_net  # noqa: E402
from ddpm_lite.models import UNetConfig, UNetModel, count_parameters  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("small_pngs")  # tests/conftest.py


@pytest.fixture(autouse=True)
def no_figures_left_open():
    before = set(plt.get_fignums())
    yield
    assert set(plt.get_fignums()) <= before


@pytest.fixture(scope="module")
def net():
    return load_digits_feature_net()


@pytest.fixture(scope="module")
def digits():
    test = load_dataset("digits", "test")
    return test.images[:120], test.labels[:120]


@pytest.fixture(scope="module")
def reference(net):
    return extract_features(load_dataset("digits", "train").images[:400], net)


# ---------------------------------------------------------------------- 07: UNetExplorer
def test_unet_explorer_controls_and_counts():
    ex = UNetExplorer("digits8")
    assert [type(c) for c in ex.controls] == [W.Dropdown, W.IntSlider, W.IntSlider]
    assert ex.renders == 1 and ex.image.value[:8] == PNG
    assert ex.total == count_parameters(UNetModel(UNetConfig.preset("digits8")))
    assert ex.rows[1].out_shape == (1, 32, 8, 8) and "1.37 M parameters" in ex.titles[0]

    before, total = ex.image.value, ex.total
    ex.model_channels.value = 64
    assert ex.renders == 2 and ex.image.value != before and ex.total > 3 * total
    before, total = ex.image.value, ex.total
    ex.num_res_blocks.value = 2
    assert ex.image.value != before and ex.total > total
    assert sum(r.stage == "down" for r in ex.rows) == 3 * 2 + 2  # 2 res blocks at 3 levels + 2 downsamplings


def test_unet_explorer_preset_resets_the_sliders_in_one_render():
    ex = UNetExplorer("digits8")
    ex.preset.value = "cifar10"
    assert ex.renders == 2  # not one per slider it resets
    assert (ex.model_channels.value, ex.num_res_blocks.value) == (128, 3)
    assert ex.rows[-1].out_shape == (1, 6, 32, 32)  # learned sigma: 2 x RGB
    assert 52e6 < ex.total < 53e6  # Improved DDPM's CIFAR-10 model
    ex.preset.value = "imagenet64"
    assert ex.total > 2.9e8 and ex.rows[0].kind.endswith("1001 label embeddings")


def test_unet_explorer_shows_why_a_config_cannot_be_built():
    ex = UNetExplorer("imagenet64")
    before = ex.image.value
    ex.model_channels.value = 16  # 32 channels at 32x32 cannot make heads of 64
    assert ex.error and "num_head_channels" in ex.error and ex.rows == []
    assert ex.image.value != before and "cannot be built" in ex.titles[0]
    ex.model_channels.value = 64
    assert ex.error is None and ex.total > 0


# ---------------------------------------------------------------------- 07: TrainingMonitor
class FakeTrainer:
    def __init__(self):
        self.history = {"loss": []}
        self.sampled = 0

    def sample(self, n, steps=None):
        self.sampled += 1
        return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(self.sampled)) * 2 - 1


def test_training_monitor_redraws_every_k_steps():
    monitor = TrainingMonitor(interval=3, n_samples=4, sample_steps=5)
    assert monitor.controls == [] and monitor.renders == 1 and "waiting" in monitor.titles[0]
    trainer, callback = FakeTrainer(), monitor.callback()
    images = []
    for step in range(1, 8):
        trainer.history["loss"].append(1.0 / step)
        callback(trainer, step, {"loss": 1.0 / step})
        images.append(monitor.image.value)
    assert monitor.renders == 1 + 2 and trainer.sampled == 2  # steps 3 and 6
    assert monitor.step == 6 and len(monitor.losses) == 6 and monitor.samples.shape == (4, 1, 8, 8)
    assert images[2] != images[1] and images[5] != images[4] and images[3] == images[2]
    assert monitor.titles[0].startswith("step 6: loss")


def test_training_monitor_with_a_real_trainer():
    from ddpm_lite.configs import ExperimentConfig
    from ddpm_lite.train import Trainer

    monitor = TrainingMonitor(interval=2, n_samples=4, sample_steps=3)
    cfg = ExperimentConfig.preset("digits").override(["model.model_channels=16", "batch_size=16"])
    trainer = Trainer.from_config(cfg, device="cpu", callbacks=[monitor.callback()], progress=False)
    trainer.train(4)
    assert monitor.renders == 3 and monitor.losses == trainer.history["loss"]


# ---------------------------------------------------------------------- 08: GuidanceExplorer
@pytest.fixture(scope="module")
def guided(digits):
    """Fake "samples" per scale: real digits, noisier at scale 0, and their labels."""
    images, labels = digits
    g = torch.Generator().manual_seed(0)
    return {0.0: (images + 0.8 * torch.randn(images.shape, generator=g)).clamp(-1, 1),
            2.0: (images + 0.2 * torch.randn(images.shape, generator=g)).clamp(-1, 1), 8.0: images.clone()}, labels


def test_guidance_explorer_metrics_are_sample_quality(guided, reference, net):
    samples, labels = guided
    ex = GuidanceExplorer(samples, labels, reference, net, label=3, scale=2.0)
    for s, x in samples.items():
        assert ex.metrics[s] == pytest.approx(sample_quality(x, labels, reference, net))
    assert ex.metrics[8.0]["accuracy"] > ex.metrics[0.0]["accuracy"]
    assert [type(c) for c in ex.controls] == [W.Dropdown, W.SelectionSlider]
    assert list(ex.scale.options) == [("0", 0.0), ("2", 2.0), ("8", 8.0)]
    assert (ex.shown() == samples[2.0][labels == 3][:16]).all()


def test_guidance_explorer_controls_change_the_picture(guided, reference, net):
    samples, labels = guided
    ex = GuidanceExplorer(samples, labels, reference, net, label=3, scale=2.0)
    assert "class 3, s = 2" in ex.titles[0] and "accuracy" in ex.titles[1]
    before = ex.image.value
    ex.label.value = 7
    assert ex.image.value != before and "class 7" in ex.titles[0]
    before = ex.image.value
    ex.scale.value = 8.0
    assert ex.image.value != before and "s = 8" in ex.titles[0]
    assert ex.renders == 3
    # the marker on the curves sits at the chosen scale
    ax = ex.fig.axes[1]
    assert any(list(line.get_xdata()) == [8.0, 8.0] for line in ax.get_lines())


def test_guidance_explorer_takes_precomputed_metrics(guided):
    samples, labels = guided
    metrics = {s: {"accuracy": 0.1 * s, "precision": 0.5, "recall": 0.5, "fid": 1.0} for s in samples}
    ex = GuidanceExplorer(samples, labels, metrics=metrics, method="classifier-free", scale_name="weight w")
    assert ex.metrics == metrics and ex.scale.description == "w"
    with pytest.raises(ValueError, match="real_features"):
        GuidanceExplorer(samples, labels)


# ---------------------------------------------------------------------- 09: FIDExplorer
def test_fid_explorer_starts_at_the_floor(digits, reference, net):
    images, labels = digits
    ex = FIDExplorer(images, labels, reference, net, benchmarks={"model": 5.0})
    assert ex.fid == pytest.approx(ex.floor)
    assert ex.floor == pytest.approx(fid_from_features(extract_features(images, net), reference))
    assert [type(c) for c in ex.controls] == [W.FloatSlider, W.FloatSlider, W.IntSlider]
    labels_shown = [t.get_text() for t in ex.fig.axes[1].get_yticklabels()]
    assert labels_shown == [FIDExplorer.FLOOR, "model", FIDExplorer.CURRENT]


@pytest.mark.parametrize("control, value", [("noise", 0.4), ("blur", 1.0), ("drop", 4)])
def test_fid_explorer_each_control_raises_fid(digits, reference, net, control, value):
    images, labels = digits
    ex = FIDExplorer(images, labels, reference, net)
    before = ex.image.value
    getattr(ex, control).value = value
    assert ex.image.value != before and ex.renders == 2
    assert ex.fid > 2 * ex.floor
    kwargs = {"noise": 0.0, "blur": 0.0, "drop": 0, control: value}
    x, y = degrade(images, labels, **kwargs)
    assert ex.fid == pytest.approx(fid_from_features(extract_features(x, net), reference))
    assert f"FID {ex.fid:.2f}" in ex.titles[0]


def test_fid_explorer_mode_dropping_keeps_precision(digits, reference, net):
    images, labels = digits
    ex = FIDExplorer(images, labels, reference, net)
    ex.drop.value = 6
    assert "digits 0-3" in ex.titles[0]
    assert ex.precision > 0.6 and ex.recall < 0.6
