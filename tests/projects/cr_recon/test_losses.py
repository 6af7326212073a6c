"""CR_recon losses: Pearson along the bins, the MSE+Pearson default, the smoothness variant, the registry."""

import pytest
import torch

from projects.cr_recon.losses import LOSSES, UnknownLossError, create_loss, pearson


def spectra(seed=0, shape=(4, 2, 2, 30)):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def test_pearson_of_identical_spectra_is_one():
    x = spectra()
    r = pearson(x, x)
    assert r.shape == (4, 2, 2)
    torch.testing.assert_close(r, torch.ones_like(r))


def test_pearson_ignores_scale_and_offset_and_sees_inversion():
    x = spectra()
    torch.testing.assert_close(pearson(3 * x + 1, x), torch.ones(4, 2, 2))
    torch.testing.assert_close(pearson(-x, x), -torch.ones(4, 2, 2))


def test_mse_pearson_is_zero_for_a_perfect_prediction_and_weights_its_terms():
    x = spectra()
    assert create_loss("mse_pearson")(x, x).item() == pytest.approx(0.0, abs=1e-6)
    y = spectra(seed=1)
    mse = torch.mean((x - y) ** 2)
    corr = pearson(x, y).mean()
    got = create_loss("mse_pearson", w_mse=2.0, w_corr=0.5)(x, y)
    torch.testing.assert_close(got, 2.0 * mse + 0.5 * (1 - corr))


def test_weighted_smooth_penalises_jagged_predictions():
    target = torch.zeros(1, 2, 2, 30)
    smooth = torch.full_like(target, 0.1)
    jagged = 0.1 * (-1) ** torch.arange(30).float().expand_as(target)  # same MSE as `smooth`
    loss = create_loss("weighted_smooth", w_mse=1.0, w_smooth=0.1)
    assert loss(jagged, target) > loss(smooth, target)
    torch.testing.assert_close(loss(smooth, target), torch.tensor(0.01))


def test_losses_are_float32_under_half_inputs():
    x = spectra().half()
    for name in LOSSES:
        assert create_loss(name)(x, x).dtype == torch.float32


def test_registry_names_unknown_loss_and_parameter():
    assert sorted(LOSSES) == ["mse_pearson", "weighted_smooth"]
    with pytest.raises(UnknownLossError, match="unknown loss 'l1'"):
        create_loss("l1")
    with pytest.raises(UnknownLossError, match=r"has no parameter\(s\) \['w_smooth'\]"):
        create_loss("mse_pearson", w_smooth=1.0)
