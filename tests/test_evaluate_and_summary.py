"""The package code behind notebooks 07-09: the U-Net trace (models.summary), the sample measures and image
degradations (evaluate), and their figures (plotting)."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from ddpm_lite.course import plotting  # noqa: E402
from ddpm_lite.course.evaluate import add_noise, degrade, drop_classes, gaussian_blur, sample_quality  # noqa: E402
from ddpm_lite.data import load_dataset  # noqa: E402
from ddpm_lite.metrics import (  # noqa: E402
    extract_features,
    fid_from_features,
    label_accuracy,
    load_digits_feature_net,
    precision_recall,
)
from ddpm_lite.models import (  # noqa: E402
    EncoderUNetModel,
    UNetConfig,
    UNetModel,
    count_parameters,
    timestep_embedding,  # noqa: E402
)
from ddpm_lite.models.summary import block_kind, unet_summary  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    before = set(plt.get_fignums())
    yield
    for num in set(plt.get_fignums()) - before:
        plt.close(num)


# ---------------------------------------------------------------------- models.summary
@pytest.mark.parametrize("preset", ["digits8", "digits16", "mnist28", "cifar10"])
def test_summary_matches_a_real_forward_pass(preset):
    config = UNetConfig.preset(preset)
    rows, total = unet_summary(config)
    torch.manual_seed(0)
    model = UNetModel(config)
    assert total == count_parameters(model) == sum(r.params for r in rows)
    shapes = []
    hooks = [b.register_forward_hook(lambda m, i, o: shapes.append((tuple(i[0].shape), tuple(o.shape))))
             for b in [*model.input_blocks, model.middle_block, *model.output_blocks, model.out]]
    with torch.no_grad():
        model(torch.zeros(2, config.in_channels, config.image_size, config.image_size), torch.zeros(2).long())
    for h in hooks:
        h.remove()
    traced = [(r.in_shape, r.out_shape) for r in rows if r.stage != "embed"]
    assert traced == [((1,) + i[1:], (1,) + o[1:]) for i, o in shapes]  # the same shapes, batch 1 on meta


def test_summary_rows_of_digits8():
    rows, _ = unet_summary(UNetConfig.preset("digits8"), batch=3)
    assert [r.stage for r in rows[:2]] == ["embed", "in"] and rows[-1].stage == "out"
    assert rows[0].out_shape == (3, 128) and rows[0].kind == "time MLP"
    kinds = {r.name: r.kind for r in rows}
    assert kinds["input_blocks.2"] == "res-down" and kinds["input_blocks.3"] == "res+attn"
    assert kinds["middle_block"] == "res+attn+res" and kinds["output_blocks.3"] == "res+attn+up"
    # every up block concatenates the output of its partner on the way down
    for r in rows:
        if r.stage == "up":
            src = rows[r.skip]
            assert src.stage in ("in", "down") and r.in_shape[1] > src.out_shape[1]
            assert r.in_shape[-1] == src.out_shape[-1]
    sources = [i for i, r in enumerate(rows) if r.stage in ("in", "down")]
    assert sorted(r.skip for r in rows if r.stage == "up") == sources


def test_summary_of_the_imagenet_model_is_instant_and_counts_labels():
    rows, total = unet_summary(UNetConfig.preset("imagenet64"))
    assert 2.9e8 < total < 3.0e8
    assert rows[0].kind == "time MLP + 1001 label embeddings"
    assert rows[-1].out_shape == (1, 6, 64, 64)


def test_summary_of_strided_conv_resampling():
    rows, _ = unet_summary(UNetConfig.preset("cifar10"))
    kinds = [r.kind for r in rows]
    assert "conv-down" in kinds and "res+up" in kinds and "res+attn+up" in kinds


def test_summary_rejects_an_invalid_config():
    config = UNetConfig.preset("digits8")
    config.num_head_channels = 48  # 32 channels cannot be split into heads of 48
    with pytest.raises(ValueError, match="num_head_channels"):
        unet_summary(config)


def test_block_kind_of_classifier_blocks():
    clf = EncoderUNetModel(UNetConfig.preset("digits8_classifier"))
    assert block_kind(clf.input_blocks[0]) == "conv"
    assert block_kind(clf.middle_block) == "res+attn+res"


# ---------------------------------------------------------------------- evaluate
@pytest.fixture(scope="module")
def net():
    return load_digits_feature_net()


@pytest.fixture(scope="module")
def digits():
    test = load_dataset("digits", "test")
    return test.images[:100], test.labels[:100]


def test_sample_quality_is_the_metrics(digits, net):
    images, labels = digits
    real = extract_features(load_dataset("digits", "train").images[:300], net)
    q = sample_quality(images, labels, real, net)
    f = extract_features(images, net)
    pr = precision_recall(real, f)
    assert q == {"accuracy": label_accuracy(images, labels, net), "precision": pr.precision, "recall": pr.recall,
                 "fid": fid_from_features(f, real)}
    assert np.isnan(sample_quality(images, None, real, net)["accuracy"])
    assert sample_quality(images, labels, torch.from_numpy(real), net)["fid"] == q["fid"]


def test_add_noise_and_blur():
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    g = torch.Generator().manual_seed(0)
    noisy = add_noise(x, 0.5, g)
    assert noisy.shape == x.shape and noisy.abs().max() <= 1 and not torch.equal(noisy, x)
    assert torch.equal(add_noise(x, 0.0), x.clamp(-1, 1))
    assert torch.equal(gaussian_blur(x, 0.0), x)
    blurred = gaussian_blur(x, 1.0)
    assert blurred.shape == x.shape
    assert blurred.var() < x.var()  # smoother
    const = torch.full((1, 1, 8, 8), 0.3)
    assert torch.allclose(gaussian_blur(const, 1.5), const, atol=1e-6)  # weights sum to 1, borders reflected
    assert torch.allclose(gaussian_blur(const, 5.0), const, atol=1e-6)  # kernel wider than the image
    with pytest.raises(ValueError):
        gaussian_blur(x, -1.0)


def test_drop_classes_and_degrade(digits):
    images, labels = digits
    x, y = drop_classes(images, labels, 3)
    assert set(y.tolist()) == set(range(7)) and len(x) == len(y) == int((labels < 7).sum())
    with pytest.raises(ValueError):
        drop_classes(images, labels, 10)
    x0, y0 = degrade(images, labels)
    assert torch.equal(x0, images) and torch.equal(y0, labels)
    # the noise of one image does not depend on which classes are dropped
    xa, ya = degrade(images, labels, noise=0.3)
    xb, yb = degrade(images, labels, noise=0.3, drop=2)
    assert torch.equal(xa[labels < 8], xb)
    with pytest.raises(ValueError):
        degrade(images, labels, noise=-0.1)


# ---------------------------------------------------------------------- plotting
def test_timestep_embedding_figure():
    e = timestep_embedding(torch.arange(200), 32)
    fig = plotting.timestep_embedding_figure(e)
    assert np.allclose(fig.axes[0].images[0].get_array(), e.numpy())
    sim = fig.axes[1].images[0].get_array()
    assert sim.shape == (200, 200) and np.allclose(np.diag(sim), 1)


def test_unet_diagram_draws_one_box_and_bar_per_block():
    rows, total = unet_summary(UNetConfig.preset("digits8"))
    fig = plotting.unet_diagram(rows, total)
    ax, axp = fig.axes
    blocks = [r for r in rows if r.stage != "embed"]
    assert len(ax.patches) == len(blocks)
    assert [p.get_height() for p in axp.patches] == [r.params for r in blocks]
    assert "1.37 M parameters" in ax.get_title()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["8×8", "4×4", "2×2"]


def test_unet_diagram_without_the_parameter_panel():
    """The slide's U-Net (tools/make_figures.py): the same boxes, one axes, a title of one's own."""
    rows, total = unet_summary(UNetConfig.preset("digits8"))
    fig = plotting.unet_diagram(rows, total, title="the U", parameters=False)
    (ax,) = fig.axes
    assert len(ax.patches) == len([r for r in rows if r.stage != "embed"])
    assert ax.get_title() == "the U" and ax.get_xticks().size == 0


def test_training_progress_figure():
    fig = plotting.training_progress_figure([1.0, 0.5, 0.25], torch.zeros(4, 1, 8, 8), step=3)
    assert fig.axes[0].get_title().startswith("step 3: loss")
    assert len(fig.axes[0].get_lines()) == 2
    fig = plotting.training_progress_figure([])
    assert "waiting" in fig.axes[0].get_title()


def test_guidance_figures():
    metrics = {s: {"accuracy": min(1, 0.1 + s / 4), "precision": 0.7 + s / 40, "recall": 0.9 - s / 20, "fid": 2.0}
               for s in (0.0, 1.0, 4.0)}
    fig = plotting.guidance_explorer_figure(torch.zeros(6, 1, 8, 8), 3, 1.0, metrics)
    assert "class 3" in fig.axes[0].get_title() and "accuracy 0.35" in fig.axes[1].get_title()
    fig = plotting.guidance_tradeoff_figure({"a": metrics, "b": metrics})
    assert len(fig.axes[0].get_lines()) == 2
    x, y = fig.axes[0].get_lines()[0].get_data()
    assert np.allclose(x, [0.9, 0.85, 0.7]) and np.allclose(y, [0.7, 0.725, 0.8])


def test_fid_explorer_figure_and_feature_gaussians():
    fig = plotting.fid_explorer_figure(torch.zeros(4, 1, 8, 8), {"floor": 0.5, "now": 3.0}, "now")
    bars = fig.axes[1].patches
    assert [b.get_width() for b in bars] == [0.5, 3.0]
    rng = np.random.default_rng(0)
    fig = plotting.feature_gaussians_figure({"a": rng.normal(size=(200, 8)), "b": rng.normal(size=(100, 8)) + 1})
    assert len(fig.axes[0].get_legend().get_texts()) == 2
