"""microseg: binary segmentation networks built to a parameter budget, after seed 003's MicroNet, HWNet and MiniNet.

    python -m projects.microseg.model          # every variant with its parameter count
    python -c "from projects.microseg.model import create_model; print(create_model('mininet'))"

The blocks are the seed's: depthwise-separable convolutions, multi-dilation separable convolutions (one
depthwise 3x3 per dilation rate, summed, then one pointwise), coordinate attention (pooling along H and
along W keeps position), a gradient feature module (fixed Sobel filters on the input's luma, so the edge map
costs no weights) and a compact ASPP (depthwise dilated branches plus image pooling). Every variant is an
encoder at strides 2, 4, 8 and a light decoder with skips; the input side must be a multiple of 8.

`create_model(name, max_params=10000)` refuses a model over budget when it is built, naming its count and the
budget: the budget is the point of the family, so it is checked where the model is made, not after training.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ConfigError
from projects.common.registry import Registry

MODELS = Registry("microseg variant", ConfigError)
register_model = MODELS.register
STRIDE = 8  # every variant downsamples three times: input sides must be multiples of this
DEFAULT_BUDGET = 10_000  # the seed's hard limit on parameters


class BudgetError(ConfigError):
    """A model has more parameters than the budget allows."""


def count_parameters(model: nn.Module) -> int:
    """Trainable and frozen weights alike; buffers (BatchNorm statistics, Sobel kernels) are not parameters."""
    return sum(p.numel() for p in model.parameters())


def create_model(name: str, max_params: int = DEFAULT_BUDGET, **overrides: Any) -> nn.Module:
    """Build variant `name`; raise BudgetError when it has more than `max_params` parameters (0 = no budget)."""
    model: nn.Module = MODELS.create(name, **overrides)
    count = count_parameters(model)
    if max_params and count > max_params:
        raise BudgetError(
            f"microseg variant {name!r} has {count:,} parameters, over the budget of {max_params:,} "
            f"(raise max_params: --set max_params=N with kiln train, -P max_params=N with mlflow run, --max-params N "
            f"with python -m projects.microseg.train; or pick a smaller variant: {variant_counts_text()})",
            field="max_params",
        )
    return model


def variant_counts() -> dict[str, int]:
    """Parameter count of every registered variant at its defaults."""
    return {name: count_parameters(MODELS.create(name)) for name in sorted(MODELS)}


def variant_counts_text() -> str:
    return ", ".join(f"{name} {count:,}" for name, count in variant_counts().items())


def conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, padding, dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    )


class DSConv(nn.Module):
    """Depthwise 3x3 (optionally strided or dilated), then pointwise 1x1; BN and ReLU after each."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.depthwise = conv_bn(cin, cin, 3, stride, groups=cin, dilation=dilation)
        self.pointwise = conv_bn(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.pointwise(F.relu(self.depthwise(x))))


class MultiDilationDSConv(nn.Module):
    """One depthwise 3x3 per dilation rate, summed, then a pointwise: several receptive fields for one 1x1.

    With `cin == cout` the block is residual.
    """

    def __init__(self, cin: int, cout: int, dilations: tuple[int, ...] = (1, 2, 4)) -> None:
        super().__init__()
        self.branches = nn.ModuleList(conv_bn(cin, cin, 3, groups=cin, dilation=d) for d in dilations)
        self.pointwise = conv_bn(cin, cout)
        self.residual = cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = sum((branch(x) for branch in self.branches), torch.zeros_like(x))
        out = self.pointwise(F.relu(mixed))
        return F.relu(out + x) if self.residual else F.relu(out)


class CoordinateAttention(nn.Module):
    """Coordinate attention (Hou et al. 2021): gates from pooling along W and along H, so position survives."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        mid = max(4, channels // reduction)
        self.squeeze = conv_bn(channels, mid)
        self.to_h = nn.Conv2d(mid, channels, 1)
        self.to_w = nn.Conv2d(mid, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height = x.shape[2]
        pooled_h = x.mean(dim=3, keepdim=True)  # (B, C, H, 1)
        pooled_w = x.mean(dim=2, keepdim=True).transpose(2, 3)  # (B, C, W, 1)
        y = F.relu(self.squeeze(torch.cat([pooled_h, pooled_w], dim=2)))
        gate_h = torch.sigmoid(self.to_h(y[:, :, :height]))
        gate_w = torch.sigmoid(self.to_w(y[:, :, height:].transpose(2, 3)))
        return x * gate_h * gate_w


class GradientFeatures(nn.Module):
    """Sobel x/y and gradient magnitude of the input's luma (fixed buffers, no weights), then a 1x1 to `cout`.

    The seed's edge-enhancement module: cracks and soft borders show first in the gradient.
    """

    kernels: torch.Tensor  # buffers, declared for the type checker
    luma: torch.Tensor

    def __init__(self, in_channels: int, cout: int) -> None:
        super().__init__()
        sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4
        self.register_buffer("kernels", torch.stack([sobel_x, sobel_x.t()])[:, None])
        self.register_buffer("luma", torch.full((1, in_channels, 1, 1), 1.0 / in_channels))
        self.project = conv_bn(3, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gray = (x * self.luma).sum(dim=1, keepdim=True)
        grad = F.conv2d(gray, self.kernels, padding=1)
        magnitude = torch.sqrt((grad * grad).sum(dim=1, keepdim=True) + 1e-6)
        return F.relu(self.project(torch.cat([grad, magnitude], dim=1)))


class CompactASPP(nn.Module):
    """ASPP made small: a 1x1 down to half width, depthwise dilated branches and an image-pooling gate on that,
    concatenated and fused back to full width by one pointwise, residual."""

    def __init__(self, channels: int, rates: tuple[int, ...] = (1, 2, 3)) -> None:
        super().__init__()
        mid = max(4, channels // 2)
        self.reduce = conv_bn(channels, mid)
        self.branches = nn.ModuleList(conv_bn(mid, mid, 3, groups=mid, dilation=r) for r in rates)
        self.pool_proj = nn.Conv2d(mid, mid, 1)
        self.fuse = conv_bn(mid * (len(rates) + 1), channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.reduce(x))
        outs = [F.relu(branch(y)) for branch in self.branches]
        pooled = torch.sigmoid(self.pool_proj(y.mean(dim=(2, 3), keepdim=True)))
        outs.append(y * pooled)  # image context as a channel gate: broadcasts without a resize
        return F.relu(self.fuse(torch.cat(outs, dim=1)) + x)


class SplitBlock(nn.Module):
    """HWNet's channel split: half the channels pass through, half go through a multi-dilation separable
    conv, then the halves are concatenated and shuffled (ShuffleNet v2), for half the cost of a full block."""

    def __init__(self, channels: int, dilations: tuple[int, ...] = (1, 2, 4)) -> None:
        super().__init__()
        if channels % 2:
            raise ValueError(f"SplitBlock needs an even channel count, got {channels}")
        self.half_channels = channels // 2
        self.transform = MultiDilationDSConv(self.half_channels, self.half_channels, dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep, change = x[:, : self.half_channels], x[:, self.half_channels :]
        out = torch.cat([keep, self.transform(change)], dim=1)
        b, c, h, w = out.shape
        return out.reshape(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)


class Decoder(nn.Module):
    """x2 bilinear upsampling, concatenation with the skip, then a separable conv; twice; a final x2 and 1x1."""

    def __init__(self, widths: tuple[int, int, int], out_channels: int = 1) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.up3 = DSConv(w3 + w2, w2)
        self.up2 = DSConv(w2 + w1, w1)
        self.head = nn.Conv2d(w1, out_channels, 1)

    def forward(self, s1: torch.Tensor, s2: torch.Tensor, s3: torch.Tensor) -> torch.Tensor:
        x = self.up3(torch.cat([_up(s3), s2], dim=1))
        x = self.up2(torch.cat([_up(x), s1], dim=1))
        return _up(self.head(x))  # logits at the input size


def _up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class MicroSegNet(nn.Module):
    """Stem (3x3 stride 2, plus gradient features), two strided separable stages with a choice of blocks,
    optional coordinate attention and compact ASPP at stride 8, then the decoder. Returns logits (B, 1, H, W)."""

    def __init__(
        self,
        widths: tuple[int, int, int],
        block: str = "ds",
        blocks: tuple[int, int] = (1, 1),
        edge_channels: int = 0,
        attention: bool = False,
        aspp: bool = False,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.edges = GradientFeatures(in_channels, edge_channels) if edge_channels else None
        self.stem = conv_bn(in_channels, w1 - edge_channels, 3, stride=2)
        self.stage2 = nn.Sequential(DSConv(w1, w2, stride=2), *(_block(block, w2) for _ in range(blocks[0])))
        self.stage3 = nn.Sequential(DSConv(w2, w3, stride=2), *(_block(block, w3) for _ in range(blocks[1])))
        self.attention = CoordinateAttention(w3) if attention else nn.Identity()
        self.aspp = CompactASPP(w3) if aspp else nn.Identity()
        self.decoder = Decoder(widths)
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = F.relu(self.stem(x))
        if self.edges is not None:
            s1 = torch.cat([s1, F.avg_pool2d(self.edges(x), 2)], dim=1)
        s2 = self.stage2(s1)
        s3 = self.aspp(self.attention(self.stage3(s2)))
        logits: torch.Tensor = self.decoder(s1, s2, s3)
        return logits


def _block(kind: str, channels: int) -> nn.Module:
    if kind == "ds":
        return DSConv(channels, channels)
    if kind == "multi":
        return MultiDilationDSConv(channels, channels)
    if kind == "split":
        return SplitBlock(channels)
    raise ValueError(f"unknown block kind {kind!r}; known: ds, multi, split")


@register_model("micronet")
def micronet(in_channels: int = 3) -> nn.Module:
    """The plain baseline: separable convs only (seed's MicroNet line)."""
    return MicroSegNet((12, 24, 32), block="ds", blocks=(1, 2), in_channels=in_channels)


@register_model("hwnet")
def hwnet(in_channels: int = 3) -> nn.Module:
    """Channel-split multi-dilation blocks with coordinate attention (seed's HWNet line)."""
    return MicroSegNet((12, 24, 32), block="split", blocks=(2, 3), attention=True, in_channels=in_channels)


@register_model("mininet")
def mininet(in_channels: int = 3) -> nn.Module:
    """Every module the seed credits: multi-dilation, gradient features, coordinate attention, compact ASPP."""
    return MicroSegNet(
        (10, 20, 28), block="multi", blocks=(1, 1), edge_channels=4, attention=True, aspp=True, in_channels=in_channels
    )


@register_model("mininet_50k")
def mininet_50k(in_channels: int = 3) -> nn.Module:
    """mininet at about five times the budget, for the question "what does the 10k limit cost?"."""
    return MicroSegNet(
        (20, 40, 68), block="multi", blocks=(2, 2), edge_channels=8, attention=True, aspp=True, in_channels=in_channels
    )


def main() -> None:
    for name, count in variant_counts().items():
        print(f"{name:<14} {count:>8,} parameters")


if __name__ == "__main__":
    from core.scripts import script_args

    script_args(sys.argv[1:], "python -m projects.microseg.model", __doc__, range(0, 1))
    main()
