"""Save samples as pictures: image grids (PNG) and 2-D point clouds (scatter plots).

Both writers are atomic: the picture goes to a temporary file beside the target, which is renamed over it
when complete. A failed write (disk full, Ctrl-C) leaves the previous file as it was, and two processes writing
the same path leave one whole picture, never a mix.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from .files import atomic_write


def grid_size(n: int, height: int, width: int, ncol: int | None = None, padding: int = 1,
              scale: int = 1) -> tuple[int, int]:
    """(width, height) in pixels of the grid that :func:`save_image_grid` writes for ``n`` images."""
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    return (ncol * (width + padding) + padding) * scale, (nrow * (height + padding) + padding) * scale


def make_grid(images: torch.Tensor, ncol: int | None = None, padding: int = 1, pad_value: float = 0.5,
              scale: int = 1) -> np.ndarray:
    """Tile images (B, C, H, W) in [-1, 1] into one uint8 array (H', W') for C = 1 or (H', W', 3) for C = 3.

    ``ncol`` columns (default: a near-square grid), ``padding`` pixels of ``pad_value`` (in [0, 1]) between and
    around the images, every pixel repeated ``scale`` times in each direction (8x8 digits are tiny).
    """
    images = torch.as_tensor(images).detach().float().cpu()
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (B, 1 or 3, H, W), got {tuple(images.shape)}")
    n, c, h, w = images.shape
    if n == 0:
        raise ValueError("no images to draw")
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    grid = np.full((c, nrow * (h + padding) + padding, ncol * (w + padding) + padding),
                   round(pad_value * 255), dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, ncol)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, top: top + h, left: left + w] = pixels[i]
    if scale > 1:
        grid = grid.repeat(scale, axis=1).repeat(scale, axis=2)
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)




def save_image_grid(images: torch.Tensor, path: str | os.PathLike, ncol: int | None = None, padding: int = 1,
                    pad_value: float = 0.5, scale: int = 1) -> Path:
    """Write :func:`make_grid` of ``images`` (in [-1, 1]) as a picture (greyscale or RGB), atomically; returns
    the path. The format follows the file's extension (PNG for .png and for unknown extensions)."""
    from PIL import Image

    grid = Image.fromarray(make_grid(images, ncol, padding, pad_value, scale))
    fmt = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
    return atomic_write(path, lambda f: grid.save(f, format=fmt))


def save_points(points: torch.Tensor, path: str | os.PathLike, reference: torch.Tensor | None = None,
                lim: float = 3.0) -> Path:
    """Scatter plot of 2-D points (N, 2) as a PNG (or the format of the extension, e.g. .pdf), over the
    ``reference`` points in grey if given; written atomically."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    points = torch.as_tensor(points).detach().float().cpu().numpy()
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {points.shape}")
    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    try:
        if reference is not None:
            ref = torch.as_tensor(reference).float().cpu().numpy()
            ax.scatter(ref[:, 0], ref[:, 1], s=2, c="0.8", label="data")
        ax.scatter(points[:, 0], points[:, 1], s=2, c="tab:blue", label="samples")
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal")
        ax.set_xticks([]), ax.set_yticks([])
        fig.tight_layout()
        suffix = Path(path).suffix.lower().lstrip(".")
        fmt = suffix if suffix in fig.canvas.get_supported_filetypes() else "png"
        return atomic_write(path, lambda f: fig.savefig(f, format=fmt))
    finally:
        plt.close(fig)
