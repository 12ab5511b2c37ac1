"""Feature extractors for FID and precision/recall: Inception-v3 and a small digits network.

Every extractor is an ``nn.Module`` that maps a batch of images ``(B, C, H, W)`` in [-1, 1] (the range of the
datasets and of the samples) to features ``(B, D)``, does its own preprocessing, and has a ``feature_dim``
attribute and a ``preprocessing_version`` string (part of the key of cached reference statistics: bump it when
the preprocessing changes).

* :class:`InceptionV3Features` -- the 2048-d pool features of torchvision's Inception-v3 (Szegedy et al. 2016),
  the network of FID (Heusel et al. 2017). Standard FID numbers (pytorch-fid, the papers' tables) use the
  TensorFlow "2015-12-05" Inception graph ported as ``pt_inception-2015-12-05``; torchvision's ImageNet weights
  are a different training of the same architecture, so FIDs from this extractor are comparable among
  themselves but not identical to published numbers.
* :class:`DigitsFeatureNet` -- a small CNN trained by the project on the 8x8 digits
  (``tools/train_digits_features.py``), shipped in ``ddpm_lite/checkpoints/digits_features.pt``. Its forward pass
  returns the 64-d penultimate features; :meth:`DigitsFeatureNet.logits` classifies. Inception features of
  8x8 images blown up to 299x299 mostly measure blur; this network's features are made for the digits.

Both extractors also give the two other outputs of the reference evaluator (guided-diffusion's
``evaluations/evaluator.py``) in the same pass, through ``evaluation_features(x) -> (pool, spatial, logits)``:

* **spatial features** for sFID (Nash et al. 2021, as used by Dhariwal & Nichol 2021): the first
  ``SPATIAL_CHANNELS = 7`` channels of an intermediate feature map, flattened. Inception: the output of ``Mixed_6d``
  (17x17 at 299x299 input; the graph's ``mixed_6``, whose first 192 channels are its ``mixed_6/conv`` branch), 7 x 17
  x 17 = 2023 numbers. Digits: the 4x4 map after the fourth convolution and its SiLU (before the last max-pool),
  7 x 4 x 4 = 112 numbers. ``spatial_features(x)`` returns them alone; the attribute is ``spatial_dim``.
* **class logits** for the Inception Score: ``logits(x)``.

The 64-d (or 2048-d) pooled features, the state dicts and the shipped weights are unchanged.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..runtime import eval_mode, model_device

CHECKPOINT_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
DIGITS_CHECKPOINT = CHECKPOINT_DIR / "digits_features.pt"
DIGITS_NOTE = CHECKPOINT_DIR / "digits_features.json"
CHECKPOINT_FORMAT = 1

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPATIAL_CHANNELS = 7  # sFID: the first 7 channels of the spatial feature map (as guided-diffusion's evaluator)


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights are not on disk and could not be downloaded."""


# --------------------------------------------------------------------------- Inception-v3


class InceptionV3Features(nn.Module):
    """Inception-v3 pool features (B, 2048) of images (B, 1 or 3, H, W) in [-1, 1].

    Preprocessing: grayscale is repeated to 3 channels, [-1, 1] is mapped to [0, 1], the images are resized to
    299x299 (bilinear, ``align_corners=False``, as pytorch-fid) and normalised with the ImageNet mean and std.
    The network is ``torchvision.models.inception_v3`` (``transform_input=True``, as torchvision sets it for its
    weights, ``aux_logits=True``) with ``fc`` replaced by ``nn.Identity``, always in eval mode.

    ``weights="IMAGENET1K_V1"`` (or ``"DEFAULT"`` or the enum member) loads torchvision's ImageNet weights from
    the torch hub cache (``torch.hub.get_dir()/checkpoints/inception_v3_google-0cc3c7bd.pth``), downloading
    them there once if ``download=True``. Offline, a missing file raises :class:`WeightsNotFoundError` within
    ``connect_timeout`` seconds, naming the file and the folder to put it in. ``weights=None`` gives a randomly
    initialised network (for tests; its features are meaningless).

    FID with these weights is comparable among runs of this class, not equal to published FIDs, which use the
    TensorFlow Inception graph (pytorch-fid's ``pt_inception-2015-12-05`` weights).
    """

    feature_dim = 2048
    spatial_dim = SPATIAL_CHANNELS * 17 * 17  # Mixed_6d is 17x17 at 299x299
    preprocessing_version = "inception_v3/torchvision/rgb-[0,1]-bilinear299-imagenet_norm/v1"

    def __init__(self, weights="IMAGENET1K_V1", download: bool = True, progress: bool = True,
                 connect_timeout: float = 5.0):
        super().__init__()
        from torchvision.models import Inception_V3_Weights, inception_v3

        if weights is None:
            net = inception_v3(weights=None, aux_logits=True, transform_input=True, init_weights=True)
        else:
            weights = Inception_V3_Weights.verify(weights)
            state_dict = load_hub_weights(weights.url, download=download, progress=progress,
                                          connect_timeout=connect_timeout, what="Inception-v3")
            net = inception_v3(weights=None, aux_logits=True, transform_input=True, init_weights=False,
                               num_classes=len(weights.meta["categories"]))
            net.load_state_dict(state_dict)
        # the classifier head is kept for logits() (the Inception Score) as non-persistent buffers, so the
        # state_dict (and the key of cached reference statistics) is the feature network's alone
        self.register_buffer("fc_weight", net.fc.weight.detach().clone(), persistent=False)
        self.register_buffer("fc_bias", net.fc.bias.detach().clone(), persistent=False)
        net.fc = nn.Identity()
        self.net = net.eval()
        self.weights_name = None if weights is None else str(weights)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        """Stays in eval mode (batch-norm statistics and dropout are never trained here)."""
        super().train(False)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_images(x, channels=(1, 3))
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = (x.to(self.mean.dtype) + 1) / 2
        if x.shape[-2:] != (299, 299):
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return self.net((x - self.mean) / self.std)

    def evaluation_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(pool (B, 2048), spatial (B, 2023), logits (B, 1000))`` in one pass: the pool features of
        :meth:`forward`, the first 7 channels of ``Mixed_6d`` flattened (sFID), and the ImageNet logits of the
        network's own classifier (Inception Score; torchvision's 1000 classes, not the TF graph's 1008)."""
        captured = []
        hook = self.net.Mixed_6d.register_forward_hook(
            lambda module, inputs, output: captured.append(output[:, :SPATIAL_CHANNELS]))
        try:
            pool = self(x)
        finally:
            hook.remove()
        logits = F.linear(pool, self.fc_weight, self.fc_bias)
        return pool, captured[-1].flatten(1), logits

    def spatial_features(self, x: torch.Tensor) -> torch.Tensor:
        """The sFID features (B, 2023): the first 7 channels of ``Mixed_6d``, flattened."""
        return self.evaluation_features(x)[1]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet class logits (B, 1000) of the network's classifier head."""
        return self.evaluation_features(x)[2]


def hub_checkpoint_path(url: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url(url)`` keeps its file: ``torch.hub.get_dir()/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def load_hub_weights(url: str, download: bool = True, progress: bool = True, connect_timeout: float = 5.0,
                     what: str = "the") -> dict:
    """A state dict from the torch hub cache, downloaded there first if missing and ``download``.

    Fails fast offline: the server is probed for ``connect_timeout`` seconds before torch.hub downloads, and any
    failure raises :class:`WeightsNotFoundError` that names the file and where to put it.
    """
    path = hub_checkpoint_path(url)
    if path.is_file():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - a truncated download or a wrong file: say which
            raise WeightsNotFoundError(_weights_help(url, path, what, f"{path} is unreadable ({err})")) from None
    if not download:
        raise WeightsNotFoundError(_weights_help(url, path, what, "download=False"))
    reachable, reason = _can_connect(url, connect_timeout)
    if not reachable:
        raise WeightsNotFoundError(_weights_help(url, path, what, f"cannot reach the server: {reason}"))
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=progress, check_hash=True,
                                                  weights_only=True)
    except Exception as err:  # noqa: BLE001 - URLError, hash mismatch, full disk: all mean no weights
        raise WeightsNotFoundError(_weights_help(url, path, what, f"the download failed: {err}")) from None


def _weights_help(url: str, path: Path, what: str, reason: str) -> str:
    return (f"{what} weights file {path.name!r} is not in {path.parent} and could not be downloaded ({reason}).\n"
            f"On a machine with internet, download {url} and copy it to {path} "
            f"(the torch hub checkpoints folder, torch.hub.get_dir()/checkpoints; set TORCH_HOME to move it). "
            f"Offline, use the project's digits features (load_digits_feature_net()), which need no download.")


def _can_connect(url: str, timeout: float) -> tuple[bool, str]:
    """Open a TCP connection to the URL's host within ``timeout`` seconds (DNS included, in a daemon thread)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    result: dict = {}

    def probe():
        try:
            socket.create_connection((parts.hostname, port), timeout=timeout).close()
            result["ok"] = True
        except OSError as err:
            result["error"] = f"{type(err).__name__}: {err}"

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    if result.get("ok"):
        return True, ""
    return False, result.get("error", f"no answer from {parts.hostname}:{port} within {timeout:g} s")


# --------------------------------------------------------------------------- digits


class DigitsFeatureNet(nn.Module):
    """A small CNN for the 8x8 digits: ``net(x)`` -> 64-d features, ``net.logits(x)`` -> 10 class logits.

    Input: (B, 1, H, W) in [-1, 1]. 8x8 images are used as they are; larger ones (16x16 "digits16") are
    area-downsampled to 8x8 first. Layers: two 3x3 convolutions (32 channels) and a 2x2 max-pool, two 3x3
    convolutions (64 channels) and a 2x2 max-pool, a linear layer to the 64 features (SiLU), dropout, and a
    linear classifier. The features (the classifier's input) serve FID and precision/recall.

    :meth:`spatial_features` (sFID) are the first 7 channels of the 4x4 map after the fourth convolution and its
    SiLU (``body[:9]``, before the last max-pool), flattened to 112 numbers: like guided-diffusion's choice of an
    Inception map with spatial extent, they see where the strokes are, which the pooled features mostly do not.
    """

    preprocessing_version = "digits/area-downsample-to-8x8/v1"
    spatial_layers = 9  # body[:9] ends with the SiLU after the fourth convolution (4x4 map)

    def __init__(self, width: int = 32, feature_dim: int = 64, num_classes: int = 10, dropout: float = 0.2):
        super().__init__()
        self.config = {"width": width, "feature_dim": feature_dim, "num_classes": num_classes, "dropout": dropout}
        self.feature_dim = feature_dim
        self.spatial_dim = min(SPATIAL_CHANNELS, 2 * width) * 4 * 4
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.SiLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.SiLU(),
            nn.MaxPool2d(2),                                   # 4x4
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.SiLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.SiLU(),
            nn.MaxPool2d(2),                                   # 2x2
            nn.Flatten(),
            nn.Linear(2 * w * 4, feature_dim), nn.SiLU(),
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, num_classes)

    @staticmethod
    def preprocess(x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) in [-1, 1] -> (B, 1, 8, 8): area downsampling for H, W > 8."""
        x = _check_images(x, channels=(1,))
        if x.shape[-2:] != (8, 8):
            if min(x.shape[-2:]) < 8:
                raise ValueError(f"DigitsFeatureNet needs images of at least 8x8, got {tuple(x.shape[-2:])}")
            x = F.adaptive_avg_pool2d(x, 8)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features (B, 64)."""
        return self.body(self.preprocess(x).to(self.head.weight.dtype))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (B, 10)."""
        return self.head(self.dropout(self(x)))

    def evaluation_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(features (B, 64), spatial (B, 112), logits (B, 10))`` in one pass; the features are exactly those of
        :meth:`forward` (the same layers in the same order)."""
        h = self.body[:self.spatial_layers](self.preprocess(x).to(self.head.weight.dtype))
        features = self.body[self.spatial_layers:](h)
        return features, h[:, :SPATIAL_CHANNELS].flatten(1), self.head(self.dropout(features))

    def spatial_features(self, x: torch.Tensor) -> torch.Tensor:
        """sFID features (B, 112): the first 7 channels of the 4x4 map after the fourth convolution, flattened."""
        return self.evaluation_features(x)[1]


def load_digits_feature_net(path: str | Path | None = None, device: torch.device | str | None = None
                            ) -> DigitsFeatureNet:
    """The shipped :class:`DigitsFeatureNet` (``ddpm_lite/checkpoints/digits_features.pt``), in eval mode.

    Loaded with ``torch.load(weights_only=True)``: the file holds only tensors, numbers and strings.
    """
    path = Path(path) if path is not None else DIGITS_CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"digits feature network not found at {path}; "
                                "train it with `python tools/train_digits_features.py`")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: checkpoint format {checkpoint.get('format')!r}, expected {CHECKPOINT_FORMAT}")
    net = DigitsFeatureNet(**checkpoint["config"])
    net.load_state_dict(checkpoint["state_dict"])
    return net.eval().to(device) if device is not None else net.eval()


def digits_feature_net_note() -> dict:
    """The note shipped with the checkpoint: test accuracy, the command and seed that trained it, ..."""
    return json.loads(DIGITS_NOTE.read_text())


def _check_images(x, channels: tuple[int, ...]) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    if x.ndim != 4 or x.shape[1] not in channels:
        want = " or ".join(str(c) for c in channels)
        raise ValueError(f"expected images (B, {want}, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"expected float images in [-1, 1], got dtype {x.dtype}")
    return x


@torch.no_grad()
def label_accuracy(images, labels, classifier=None, batch_size: int = 512,
                   device: torch.device | str | None = None) -> float:
    """The fraction of ``images`` that ``classifier`` assigns to their intended ``labels``.

    For class-conditional samples: ``labels`` are the classes the samples were drawn for. ``classifier`` maps
    images (B, C, H, W) in [-1, 1] to logits (B, num_classes); a :class:`DigitsFeatureNet` is used through its
    :meth:`~DigitsFeatureNet.logits`. Default: the shipped digits network (:func:`load_digits_feature_net`), which
    takes 8x8 and 16x16 digits.
    """
    if classifier is None:
        classifier = load_digits_feature_net()
    images = torch.as_tensor(images)
    labels = torch.as_tensor(labels).reshape(-1)
    if images.ndim != 4 or len(images) != len(labels) or len(labels) == 0:
        raise ValueError(f"need images (N, C, H, W) and N >= 1 labels, got {tuple(images.shape)} and "
                         f"{tuple(labels.shape)}")
    if labels.is_floating_point():
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if device is None:
        device = model_device(classifier)
    predict = classifier.logits if isinstance(classifier, DigitsFeatureNet) else classifier
    correct = 0
    with eval_mode(classifier):
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].to(device)
            x = x.float() / 127.5 - 1 if x.dtype == torch.uint8 else x
            logits = predict(x)
            if logits.ndim != 2 or len(logits) != len(x):
                raise ValueError(f"the classifier must return logits (B, num_classes), got {tuple(logits.shape)}")
            correct += (logits.argmax(1).cpu() == labels[start:start + batch_size]).sum().item()
    return correct / len(labels)
