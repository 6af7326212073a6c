"""CR_recon preprocessing: Bayer layout, 301 -> 30 bins, padding removal, the cache, and 180-degree augmentation."""

import os

import numpy as np
import pytest
import torch

from projects.cr_recon import data as crdata


def write_pair(folder, index, struct, spectra):
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"struct_{index}.npy", struct)
    np.save(folder / f"spectra_{index}.npy", spectra)


@pytest.fixture
def raw(tmp_path):
    """Two files of 4 rows each; the last row of each is zero padding. Structures are {0, 1} masks."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "raw"
    for index in range(2):
        struct = (rng.random((4, 1, 128, 128)) > 0.5).astype(np.uint8)
        spectra = rng.random((4, 3, 301)).astype(np.float32) + 0.1
        struct[3], spectra[3] = 0, 0
        write_pair(folder, index, struct, spectra)
    return folder


def test_rgb_to_bayer_puts_r_top_left_and_b_bottom_right():
    rgb = np.stack([np.full(5, 1.0), np.full(5, 2.0), np.full(5, 3.0)])  # R=1, G=2, B=3
    bayer = crdata.rgb_to_bayer(rgb)
    assert bayer.shape == (2, 2, 5)
    np.testing.assert_array_equal(bayer[..., 0], [[1, 2], [2, 3]])
    assert crdata.rgb_to_bayer(np.zeros((7, 3, 10))).shape == (7, 2, 2, 10)


def test_downsample_averages_301_bins_into_30():
    ramp = np.arange(301, dtype=np.float32)
    out = crdata.downsample_bins(ramp, 30)
    assert out.shape == (30,)
    assert out[0] == pytest.approx(np.mean(ramp[0:11]))  # bin 0 spans [0, ceil(301/30)) = [0, 11)
    assert out[-1] == pytest.approx(np.mean(ramp[290:301]))
    assert np.all(np.diff(out) > 0)
    np.testing.assert_allclose(crdata.downsample_bins(np.full((2, 301), 0.7), 30), 0.7, rtol=1e-6)
    with pytest.raises(crdata.DataError, match="out_len must be between 1 and the 301 input bins, got 400"):
        crdata.downsample_bins(ramp, 400)


def test_preprocess_drops_padding_scales_masks_and_caches(raw, tmp_path):
    prepared = crdata.preprocess(raw, tmp_path / "cache", out_len=30)
    assert prepared.struct.shape == (6, 1, 128, 128) and prepared.bayer.shape == (6, 2, 2, 30)
    assert isinstance(prepared.struct, np.memmap) and isinstance(prepared.bayer, np.memmap)
    assert set(np.unique(prepared.struct)) == {0, 255}  # {0, 1} masks scaled to [0, 255]
    assert prepared.info["dropped_zero_padded"] == 2 and prepared.info["samples"] == 6
    source = np.load(raw / "spectra_1.npy")[0]
    expected = crdata.downsample_bins(crdata.rgb_to_bayer(source), 30)
    np.testing.assert_allclose(prepared.bayer[3], expected, rtol=1e-6)

    stamp = os.stat(prepared.cache_dir / "bayer.npy").st_mtime_ns
    again = crdata.preprocess(raw, tmp_path / "cache", out_len=30)
    assert again.cache_dir == prepared.cache_dir
    assert os.stat(again.cache_dir / "bayer.npy").st_mtime_ns == stamp  # reused, not rebuilt
    other = crdata.preprocess(raw, tmp_path / "cache", out_len=15)
    assert other.cache_dir != prepared.cache_dir and other.bayer.shape[-1] == 15


def test_flip_sign_negates_raw_spectra(raw, tmp_path):
    plain = crdata.preprocess(raw, tmp_path / "cache")
    flipped = crdata.preprocess(raw, tmp_path / "cache", flip_sign=True)
    np.testing.assert_allclose(flipped.bayer, -np.asarray(plain.bayer))


def test_augmentation_adds_rotated_copies_with_r_and_b_swapped(raw, tmp_path):
    prepared = crdata.preprocess(raw, tmp_path / "cache")
    dataset = crdata.CRDataset(prepared, np.array([1, 4]), augment_180=True)
    assert len(dataset) == 4
    x, y = dataset[0]
    x_rot, y_rot = dataset[2]  # the rotated copy of sample 1
    assert x.dtype == torch.float32 and x.min() == -1 and x.max() == 1
    torch.testing.assert_close(x_rot, torch.flip(x, dims=(-2, -1)))
    torch.testing.assert_close(y_rot[0, 0], y[1, 1])  # R <- B
    torch.testing.assert_close(y_rot[1, 1], y[0, 0])  # B <- R
    torch.testing.assert_close(y_rot[0, 1], y[1, 0])  # the two G pixels swap places
    assert len(crdata.CRDataset(prepared, np.array([1, 4]))) == 2


def test_split_is_seeded_and_disjoint():
    train, val = crdata.split_indices(20, 0.8, seed=1)
    assert len(train) == 16 and len(val) == 4 and not set(train) & set(val)
    np.testing.assert_array_equal(crdata.split_indices(20, 0.8, seed=1)[1], val)
    with pytest.raises(crdata.DataError, match="train_ratio must be between 0 and 1"):
        crdata.split_indices(20, 1.0, seed=1)


def test_bad_folders_are_named(tmp_path):
    with pytest.raises(crdata.DataError, match="data folder not found"):
        crdata.find_pairs(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(crdata.DataError, match="no struct_\\*.npy files"):
        crdata.find_pairs(tmp_path / "empty")
    write_pair(tmp_path / "orphan", 0, np.zeros((2, 1, 8, 8), np.uint8), np.ones((2, 3, 10), np.float32))
    np.save(tmp_path / "orphan" / "struct_1.npy", np.zeros((2, 1, 8, 8), np.uint8))
    with pytest.raises(crdata.DataError, match=r"unmatched struct/spectra files for id\(s\) \['1'\]"):
        crdata.find_pairs(tmp_path / "orphan")


def test_mismatched_counts_and_shapes_are_named(tmp_path):
    write_pair(tmp_path / "a", 0, np.zeros((3, 1, 8, 8), np.uint8), np.ones((2, 3, 10), np.float32))
    with pytest.raises(crdata.DataError, match="struct_0.npy has 3 samples but spectra_0.npy has 2"):
        crdata.preprocess(tmp_path / "a", tmp_path / "cache")
    write_pair(tmp_path / "b", 0, np.zeros((2, 1, 8, 8), np.uint8), np.ones((2, 4, 10), np.float32))
    with pytest.raises(crdata.DataError, match=r"expected shape \(N, 3, L\), got \(2, 4, 10\)"):
        crdata.preprocess(tmp_path / "b", tmp_path / "cache")
    spectra = np.ones((2, 3, 10), np.float32)
    spectra[1, 0, 0] = np.nan
    write_pair(tmp_path / "c", 0, np.zeros((2, 1, 8, 8), np.uint8), spectra)
    with pytest.raises(crdata.DataError, match="1 sample\\(s\\) hold NaN"):
        crdata.preprocess(tmp_path / "c", tmp_path / "cache")
