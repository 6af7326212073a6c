"""The CR_recon sample generator: file layout, zero padding, determinism, and the proxy's 180-degree symmetry."""

import numpy as np
import pytest
from click.testing import CliRunner

from data.spectra import WAVELENGTHS, generate, main, proxy_spectra, random_structures


def test_generate_writes_seed_layout_with_zero_padding(tmp_path):
    paths = generate(tmp_path, num_samples=10, num_files=2, pad_fraction=0.2, seed=1)
    assert [p.name for p in paths] == ["struct_0.npy", "spectra_0.npy", "struct_1.npy", "spectra_1.npy"]
    struct, spectra = np.load(tmp_path / "struct_0.npy"), np.load(tmp_path / "spectra_0.npy")
    assert struct.shape == (6, 1, 128, 128) and struct.dtype == np.uint8  # 5 samples + 1 padding row
    assert spectra.shape == (6, 3, 301) and spectra.dtype == np.float32
    assert set(np.unique(struct[:5])) == {0, 255}
    assert not struct[5].any() and not spectra[5].any()
    assert (spectra[:5] > 0).all() and (spectra[:5] <= 1).all()


def test_same_seed_gives_identical_files(tmp_path):
    generate(tmp_path / "a", num_samples=4, num_files=1, seed=3)
    generate(tmp_path / "b", num_samples=4, num_files=1, seed=3)
    for name in ("struct_0.npy", "spectra_0.npy"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_rotating_a_structure_by_180_degrees_swaps_r_and_b():
    # The 180-degree augmentation is only valid if the data obeys this symmetry.
    structs = random_structures(6, np.random.default_rng(0))
    spectra = proxy_spectra(structs)
    rotated = proxy_spectra(structs[:, ::-1, ::-1])
    np.testing.assert_allclose(rotated[:, 0], spectra[:, 2], atol=1e-6)
    np.testing.assert_allclose(rotated[:, 2], spectra[:, 0], atol=1e-6)
    np.testing.assert_allclose(rotated[:, 1], spectra[:, 1], atol=1e-6)


def test_spectra_depend_on_the_structure():
    # Learnable, not constant: spectra differ between structures far more than within smooth neighbours.
    structs = random_structures(32, np.random.default_rng(1))
    spectra = proxy_spectra(structs)
    assert spectra.std(axis=0).mean() > 0.05
    assert np.abs(np.diff(spectra, axis=-1)).max() < 0.05  # smooth over 1 nm steps
    assert len(WAVELENGTHS) == 301
    r_vs_b = np.abs(spectra[:, 0] - spectra[:, 2]).mean()
    assert r_vs_b > 0.02  # the four pixels see different structure


@pytest.mark.parametrize(("args", "message"), [(["--num-samples", "1", "--num-files", "2"], "must be >= num_files")])
def test_cli_rejects_bad_counts(tmp_path, args, message):
    result = CliRunner().invoke(main, ["--out", str(tmp_path), *args])
    assert result.exit_code == 2 and message in result.output


def test_cli_writes_files(tmp_path):
    result = CliRunner().invoke(main, ["--out", str(tmp_path), "--num-samples", "3", "--num-files", "1"])
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "spectra_0.npy").shape[0] == 3 + 0  # 3 * 0.03 rounds to no padding
