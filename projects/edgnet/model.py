"""EDGNet: an encoder-decoder UNet (BatchNorm, ReLU, skip connections) that segments drawing line work.

    python -c "from projects.edgnet.model import create_model; print(create_model('edgnet_large'))"

Variants are found through a registry, as in timm: `edgnet` (~0.5M params) and `edgnet_large`
(4 levels, base width 64, ~31M params, the seed's model).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from projects.common.registry import Registry

MODELS = Registry("model")
register_model = MODELS.register


def create_model(name: str, **overrides: Any) -> UNet:
    """Build variant `name`; overrides that are 0 or empty keep the variant's default."""
    model: UNet = MODELS.create(name, **{k: v for k, v in overrides.items() if v})
    return model


def double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Up(nn.Module):
    """Transposed-conv upsampling, concatenation with the skip, then a double conv."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        self.conv = double_conv(cout * 2, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(torch.cat([skip, self.up(x)], dim=1))
        return out


class UNet(nn.Module):
    """`depth` downsamplings; widths base, 2*base, ... 2**depth*base at the bottleneck. Input side % 2**depth == 0."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1, base_channels: int = 64, depth: int = 4) -> None:
        super().__init__()
        if depth < 1 or base_channels < 1:
            raise ValueError(f"UNet needs depth >= 1 and base_channels >= 1, got {depth}, {base_channels}")
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.stem = double_conv(in_channels, widths[0])
        self.downs = nn.ModuleList(double_conv(widths[i], widths[i + 1]) for i in range(depth))
        self.ups = nn.ModuleList(Up(widths[i + 1], widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], out_channels, 1)
        self.pool = nn.MaxPool2d(2)
        self.depth = depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for down in self.downs:
            skips.append(down(self.pool(skips[-1])))
        x = skips.pop()
        for up in self.ups:
            x = up(x, skips.pop())
        logits: torch.Tensor = self.head(x)
        return logits


@register_model("edgnet")
def edgnet(base_channels: int = 16, depth: int = 3, in_channels: int = 1) -> nn.Module:
    return UNet(in_channels, 1, base_channels, depth)


@register_model("edgnet_large")
def edgnet_large(base_channels: int = 64, depth: int = 4, in_channels: int = 1) -> nn.Module:
    return UNet(in_channels, 1, base_channels, depth)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
