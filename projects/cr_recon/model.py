"""CR_recon models: a 128x128 structure image -> (B, 2, 2, out_len) spectra, one per Bayer pixel.

    python -c "from projects.cr_recon.model import create_model; print(create_model('cnn_xattn'))"

Models are found through a timm-style registry: `@register_model` adds a builder to `MODELS`, and
`create_model(name, **overrides)` builds one, refusing unknown names and unknown parameters by name.

Both models share the seed's CNN backbone: a 5x5 stride-2 stem, four residual stages that halve the
resolution (64 -> 96 -> 128 -> 192 -> 256 channels, 128 px -> 4 px), GroupNorm + SiLU, and circular padding
because the structure is one period of a periodic metasurface. The output grid is [[R, G], [G, B]]
(index [0, 0] = R, [1, 1] = B): the pixel under each quadrant of the unit cell.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from projects.common.registry import Registry

DEFAULT_WIDTHS = (64, 96, 128, 192, 256)  # stem, then the four stages


class UnknownModelError(ValueError):
    """An unknown model name or a parameter the model does not take."""


MODELS = Registry("model", UnknownModelError)
register_model = MODELS.register()  # under the builder's function name


def create_model(name: str, **overrides: object) -> nn.Module:
    """Build the registered model `name`; `overrides` replace its default parameters."""
    model: nn.Module = MODELS.create(name, **overrides)
    return model


def _groups(channels: int) -> int:
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


def _conv(cin: int, cout: int, kernel: int, stride: int, circular: bool) -> nn.Conv2d:
    return nn.Conv2d(
        cin,
        cout,
        kernel,
        stride=stride,
        padding=kernel // 2,
        padding_mode="circular" if circular else "zeros",
        bias=False,
    )


class ResBlock(nn.Module):
    """conv-GN-SiLU-conv-GN plus a (strided 1x1) shortcut, then SiLU."""

    def __init__(self, cin: int, cout: int, stride: int, circular: bool, dropout: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(cin, cout, 3, stride, circular),
            nn.GroupNorm(_groups(cout), cout),
            nn.SiLU(inplace=True),
            nn.Dropout2d(dropout) if dropout > 0 else nn.Identity(),
            _conv(cout, cout, 3, 1, circular),
            nn.GroupNorm(_groups(cout), cout),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.GroupNorm(_groups(cout), cout)
            )
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.act(self.body(x) + self.shortcut(x))
        return out


class Backbone(nn.Module):
    """Stem plus stages of two residual blocks each; the first block of a stage halves the resolution."""

    def __init__(self, widths: Sequence[int], circular: bool, dropout: float, stem_stride: int = 2) -> None:
        super().__init__()
        if len(widths) < 2:
            raise ValueError(f"widths must list the stem's and at least one stage's channels, got {list(widths)}")
        self.stem = nn.Sequential(
            _conv(1, widths[0], 5, stem_stride, circular),
            nn.GroupNorm(_groups(widths[0]), widths[0]),
            nn.SiLU(inplace=True),
        )
        self.reduction = stem_stride * 2 ** (len(widths) - 1)  # input side / output side
        stages = []
        for cin, cout in zip(widths[:-1], widths[1:], strict=True):
            stages.append(
                nn.Sequential(ResBlock(cin, cout, 2, circular, dropout), ResBlock(cout, cout, 1, circular, 0.0))
            )
        self.stages = nn.Sequential(*stages)
        self.out_channels = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.stages(self.stem(x))
        return features


def _to_bayer(per_bin: torch.Tensor) -> torch.Tensor:
    """(B, L, 4) -> (B, 2, 2, L)."""
    b, length, _ = per_bin.shape
    return per_bin.transpose(1, 2).reshape(b, 2, 2, length)


class CNNXAttn(nn.Module):
    """CNN backbone, then a Transformer decoder whose `out_len` learned bin queries attend to the image.

    The memory is the globally pooled feature plus the final feature map (4x4 by default) as tokens with learned
    position embeddings: a colour router sends light to a pixel by where the structure is, so the decoder
    must know which token lies over which quadrant.
    """

    def __init__(
        self,
        backbone: Backbone,
        grid: int,
        out_len: int,
        d_model: int,
        nhead: int,
        dec_layers: int,
        tr_dropout: float,
        head_dropout: float,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.proj = nn.Linear(self.backbone.out_channels, d_model)
        self.pos = nn.Parameter(torch.randn(1, 1 + grid * grid, d_model) * 0.02)
        self.queries = nn.Parameter(torch.randn(1, out_len, d_model) * 0.02)
        layer = nn.TransformerDecoderLayer(
            d_model, nhead, dim_feedforward=4 * d_model, dropout=tr_dropout, activation="gelu",
            batch_first=True, norm_first=True,
        )  # fmt: skip
        self.decoder = nn.TransformerDecoder(layer, dec_layers, norm=nn.LayerNorm(d_model))
        self.head = nn.Sequential(nn.Dropout(head_dropout), nn.Linear(d_model, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.backbone(x)  # (B, C, g, g)
        tokens = feat.flatten(2).transpose(1, 2)  # (B, g*g, C)
        memory = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)
        memory = self.proj(memory) + self.pos
        queries = self.queries.expand(x.shape[0], -1, -1)
        return _to_bayer(self.head(self.decoder(queries, memory)))


class CNNGRU(nn.Module):
    """CNN backbone, then a 2-layer GRU that unrolls over the bins from an image summary (the lighter model).

    The summary is a linear map of the whole final feature map (not just its mean) so that it keeps where
    each feature lies; it seeds the GRU's hidden state and is fed at every step with a learned bin embedding.
    """

    def __init__(self, backbone: Backbone, grid: int, out_len: int, hidden: int, gru_layers: int, head_dropout: float):
        super().__init__()
        self.backbone = backbone
        self.summary = nn.Sequential(
            nn.Flatten(), nn.Linear(self.backbone.out_channels * grid * grid, hidden), nn.SiLU(inplace=True)
        )
        self.init_h = nn.Linear(hidden, gru_layers * hidden)
        self.bins = nn.Parameter(torch.randn(1, out_len, hidden) * 0.02)
        self.gru = nn.GRU(2 * hidden, hidden, num_layers=gru_layers, batch_first=True)
        self.head = nn.Sequential(nn.Dropout(head_dropout), nn.Linear(hidden, 4))
        self.gru_layers, self.hidden = gru_layers, hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        summary = self.summary(self.backbone(x))  # (B, H)
        b = x.shape[0]
        h0 = self.init_h(summary).view(b, self.gru_layers, self.hidden).transpose(0, 1).contiguous()
        steps = torch.cat([self.bins.expand(b, -1, -1), summary.unsqueeze(1).expand(-1, self.bins.shape[1], -1)], -1)
        out, _ = self.gru(steps, h0)
        return _to_bayer(self.head(out))


@register_model
def cnn_xattn(
    out_len: int = 30,  # spectral bins per pixel
    d_model: int = 256,  # Transformer width
    nhead: int = 8,  # attention heads
    dec_layers: int = 4,  # Transformer decoder layers
    cnn_dropout: float = 0.05,  # channel dropout inside the residual blocks
    tr_dropout: float = 0.1,  # dropout inside the Transformer
    head_dropout: float = 0.2,  # dropout before the output projection
    use_circular_padding: bool = True,  # the structure is one period of a periodic array
    widths: Sequence[int] = DEFAULT_WIDTHS,  # stem + stage widths; one stage per entry after the first
    stem_stride: int = 2,  # the seed's 5x5 stem halves 128 -> 64; 4 trades detail for CPU speed
    img_size: int = 128,  # input side; must be a multiple of the backbone's reduction (32 by default)
) -> nn.Module:
    """The seed's default: CNN + Transformer decoder with learned bin queries."""
    backbone, grid = _backbone(widths, use_circular_padding, cnn_dropout, stem_stride, img_size)
    return CNNXAttn(backbone, grid, out_len, d_model, nhead, dec_layers, tr_dropout, head_dropout)


@register_model
def cnn_gru(
    out_len: int = 30,  # spectral bins per pixel
    hidden: int = 256,  # GRU width
    gru_layers: int = 2,  # stacked GRU layers
    cnn_dropout: float = 0.05,  # channel dropout inside the residual blocks
    head_dropout: float = 0.1,  # dropout before the output projection
    use_circular_padding: bool = True,  # the structure is one period of a periodic array
    widths: Sequence[int] = DEFAULT_WIDTHS,  # stem + stage widths; one stage per entry after the first
    stem_stride: int = 2,  # the seed's 5x5 stem halves 128 -> 64; 4 trades detail for CPU speed
    img_size: int = 128,  # input side; must be a multiple of the backbone's reduction (32 by default)
) -> nn.Module:
    """The lighter comparison model: CNN + GRU over the bins."""
    backbone, grid = _backbone(widths, use_circular_padding, cnn_dropout, stem_stride, img_size)
    return CNNGRU(backbone, grid, out_len, hidden, gru_layers, head_dropout)


def _backbone(
    widths: Sequence[int], circular: bool, dropout: float, stem_stride: int, img_size: int
) -> tuple[Backbone, int]:
    """The backbone and the side of its output grid, refusing sizes it cannot tile."""
    if stem_stride < 1:
        raise ValueError(f"stem_stride must be >= 1, got {stem_stride}")
    backbone = Backbone(tuple(widths), circular, dropout, stem_stride)
    if img_size < backbone.reduction or img_size % backbone.reduction:
        raise ValueError(f"img_size must be a positive multiple of {backbone.reduction}, got {img_size}")
    return backbone, img_size // backbone.reduction


@contextlib.contextmanager
def onnx_exportable() -> Iterator[None]:
    """Turn off PyTorch's eval-mode attention fast path (`_native_multi_head_attention`), which the
    classic ONNX exporter cannot export; the plain path computes the same thing."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
