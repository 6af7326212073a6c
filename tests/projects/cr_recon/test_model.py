"""CR_recon model registry: every model maps (B, 1, 128, 128) to (B, 2, 2, out_len); bad names fail by name."""

import pytest
import torch

from projects.common.onnx_export import check_onnx, export_onnx
from projects.cr_recon.model import MODELS, UnknownModelError, create_model, onnx_exportable

TINY = {"widths": (8, 8, 8, 8, 8)}
TINY_HEAD = {"cnn_xattn": {"d_model": 16, "nhead": 2, "dec_layers": 1}, "cnn_gru": {"hidden": 16}}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_output_shape_is_bayer_grid(name):
    model = create_model(name, **TINY, **TINY_HEAD[name]).eval()
    with torch.no_grad():
        out = model(torch.randn(3, 1, 128, 128))
    assert out.shape == (3, 2, 2, 30)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_out_len_and_img_size_are_parameters(name):
    model = create_model(name, out_len=12, img_size=64, **TINY, **TINY_HEAD[name]).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 64, 64)).shape == (2, 2, 2, 12)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_stride_4_stem_with_three_stages_keeps_a_4x4_grid(name):
    model = create_model(name, widths=(8, 8, 8, 8), stem_stride=4, **TINY_HEAD[name]).eval()
    assert model.backbone.reduction == 32
    with torch.no_grad():
        assert model(torch.randn(2, 1, 128, 128)).shape == (2, 2, 2, 30)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_onnx_export_matches_pytorch_at_another_batch_size(name, tmp_path):
    model = create_model(name, **TINY, **TINY_HEAD[name]).eval()
    with onnx_exportable():
        path = export_onnx(model, torch.randn(1, 1, 128, 128), tmp_path / "m.onnx", dynamic_hw=False)
        assert check_onnx(path, model, torch.randn(3, 1, 128, 128)) < 1e-4


def test_default_cnn_xattn_follows_the_seed():
    model = create_model("cnn_xattn")
    convs = [m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
    assert convs[0].kernel_size == (5, 5) and convs[0].stride == (2, 2)
    assert all(c.padding_mode == "circular" for c in convs)
    assert [s[0].body[0].out_channels for s in model.backbone.stages] == [96, 128, 192, 256]
    assert model.queries.shape == (1, 30, 256)
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in model.modules()) > 8


def test_gradients_reach_the_stem():
    model = create_model("cnn_xattn", **TINY, **TINY_HEAD["cnn_xattn"])
    model(torch.randn(2, 1, 128, 128)).pow(2).mean().backward()
    assert model.backbone.stem[0].weight.grad.abs().sum() > 0


def test_unknown_name_and_parameter_are_named():
    with pytest.raises(UnknownModelError, match=r"unknown model 'resnet'; known: \['cnn_gru', 'cnn_xattn'\]"):
        create_model("resnet")
    with pytest.raises(UnknownModelError, match=r"model 'cnn_gru' has no parameter\(s\) \['d_model'\]"):
        create_model("cnn_gru", d_model=64)
    with pytest.raises(ValueError, match="img_size must be a positive multiple of 32, got 100"):
        create_model("cnn_xattn", img_size=100)
