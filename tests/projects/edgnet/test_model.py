import pytest
import torch

from projects.edgnet.model import MODELS, count_parameters, create_model

EXPECTED_PARAMS = {"edgnet": (0.4e6, 0.6e6), "edgnet_large": (30e6, 32e6)}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_model_keeps_spatial_shape(name):
    model = create_model(name).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 64, 96))
    assert out.shape == (2, 1, 64, 96)
    low, high = EXPECTED_PARAMS[name]
    assert low < count_parameters(model) < high


def test_overrides_change_width_and_depth():
    assert count_parameters(create_model("edgnet", base_channels=8, depth=2)) < 100_000


def test_unknown_model_is_named():
    with pytest.raises(ValueError, match=r"unknown model 'unet9'; known: \['edgnet', 'edgnet_large'\]"):
        create_model("unet9")
