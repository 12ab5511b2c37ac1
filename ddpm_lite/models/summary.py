"""What flows through a U-Net: every block's input and output shape and its parameter count.

:func:`unet_summary` builds the model on PyTorch's ``meta`` device (shapes only: no memory, no arithmetic), so even
the 300M-parameter ImageNet 64x64 configuration is traced in a fraction of a second, and records each block of the
downsampling path, the middle block and the upsampling path with forward hooks::

    rows, total = unet_summary(UNetConfig.preset("cifar10"))
    for r in rows:
        print(r.name, r.kind, r.in_shape, "->", r.out_shape, r.params)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .config import UNetConfig
from .nn import count_parameters
from .unet import AttentionBlock, ResBlock, UNetModel

__all__ = ["BlockInfo", "unet_summary", "block_kind"]


@dataclass
class BlockInfo:
    """One block of the U-Net as traced by :func:`unet_summary`.

    ``stage``: "embed" (the timestep / label embedding MLP), "in" (the first convolution), "down" (a block of the
    downsampling path), "middle", "up" (a block of the upsampling path) or "out" (the last GroupNorm and conv).
    ``kind``: what the block does, e.g. "res", "res+attn", "res-down" (a residual block that halves the size),
    "res+attn+up". ``in_shape`` is what the block receives: for the upsampling path, the concatenation of the
    path's features and the skip connection. ``skip``: for an "up" block, the index (in the returned rows) of the
    block whose output it concatenates; else None.
    """

    name: str
    stage: str
    kind: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    params: int
    skip: int | None = None

    @property
    def resolution(self) -> int:
        """The feature-map size the block outputs (0 for the embedding)."""
        return self.out_shape[-1] if len(self.out_shape) == 4 else 0

    @property
    def channels(self) -> int:
        return self.out_shape[1]


def block_kind(block: nn.Module) -> str:
    """A short description of a U-Net block: "conv", "res", "res+attn", "res-down", "conv-down", "res+up"..."""
    parts = []
    for layer in (block if isinstance(block, nn.Sequential) else [block]):
        if isinstance(layer, ResBlock):
            resample = type(layer.resample).__name__
            parts.append("res-down" if resample == "AvgPool2d" else "res-up" if resample != "Identity" else "res")
        elif isinstance(layer, AttentionBlock):
            parts.append("attn")
        elif isinstance(layer, nn.Conv2d):
            parts.append("conv-down" if layer.stride[0] == 2 else "conv")
        elif isinstance(layer, nn.AvgPool2d):
            parts.append("pool-down")
        elif isinstance(layer, nn.Sequential) and any(isinstance(m, nn.Upsample) for m in layer):
            parts.append("conv-up")
        elif isinstance(layer, nn.Upsample):
            parts.append("up")
    kind = "+".join(parts) or type(block).__name__
    # "res+res-up" (a block that ends by upsampling) reads better as "res+up"
    return kind.replace("+res-up", "+up").replace("+conv-up", "+up")


def unet_summary(config: UNetConfig, batch: int = 1, device: str | torch.device = "meta"
                 ) -> tuple[list[BlockInfo], int]:
    """Trace one forward pass of ``UNetModel(config)``: (rows, total parameter count).

    The model is built on ``device`` (default ``"meta"``: shapes only, instant even for ImageNet-size models). A
    class-conditional model is run with ``y=None`` (its null label). Invalid configurations raise ValueError (from
    :meth:`UNetConfig.validate`), as building the model would.
    """
    config.validate()
    with torch.device(device):
        model = UNetModel(config)
    rows: list[BlockInfo] = []
    handles = []

    def record(name: str, stage: str, module: nn.Module):
        def hook(mod, inputs, output):
            rows.append(BlockInfo(name, stage, block_kind(mod) if stage != "out" else "norm+conv",
                                  tuple(inputs[0].shape), tuple(output.shape), count_parameters(mod)))
        return module.register_forward_hook(hook)

    for i, block in enumerate(model.input_blocks):
        handles.append(record(f"input_blocks.{i}", "in" if i == 0 else "down", block))
    handles.append(record("middle_block", "middle", model.middle_block))
    for i, block in enumerate(model.output_blocks):
        handles.append(record(f"output_blocks.{i}", "up", block))
    handles.append(record("out", "out", model.out))
    x = torch.zeros(batch, config.in_channels, config.image_size, config.image_size, device=device)
    t = torch.zeros(batch, dtype=torch.long, device=device)
    try:
        with torch.no_grad():
            model(x, t)
    finally:
        for h in handles:
            h.remove()
    embed_params = count_parameters(model.time_embed) + (count_parameters(model.label_emb) if model.label_emb
                                                          is not None else 0)
    emb = (batch, config.time_embed_dim)
    kind = "time MLP" + (f" + {config.num_classes + 1} label embeddings" if model.label_emb is not None else "")
    rows.insert(0, BlockInfo("time_embed", "embed", kind, (batch, config.model_channels), emb, embed_params))
    # each up block concatenates the output of one down block (or the first conv), last in, first out
    sources = [i for i, r in enumerate(rows) if r.stage in ("in", "down")]
    for r in rows:
        if r.stage == "up":
            r.skip = sources.pop()
    total = count_parameters(model)
    assert total == sum(r.params for r in rows), "every parameter belongs to one traced block"
    return rows, total
