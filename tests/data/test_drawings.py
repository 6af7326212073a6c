import numpy as np

from data.drawings import generate, render


def test_render_is_deterministic_with_exact_binary_mask():
    image, mask = render(128, seed=7)
    again, _ = render(128, seed=7)
    assert np.array_equal(image, again)
    assert set(np.unique(mask)) <= {0, 255}
    fraction = (mask > 0).mean()
    assert 0.01 < fraction < 0.3
    # line work is darker than the paper around it
    assert image[mask > 0].mean() < image[mask == 0].mean() - 40


def test_generate_writes_matching_images_and_masks(tmp_path):
    generate(tmp_path, count=5, size=64, seed=1)
    images = sorted(p.name for p in (tmp_path / "images").iterdir())
    masks = sorted(p.name for p in (tmp_path / "masks").iterdir())
    assert images == masks == [f"{i:04d}.png" for i in range(5)]


def test_kiln_data_sample_drawings(tmp_path):
    from click.testing import CliRunner

    from kiln.cli import main

    result = CliRunner().invoke(
        main, ["data", "sample", "drawings", str(tmp_path / "d"), "--count", "2", "--size", "64"]
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "d" / "masks").iterdir()) == ["0000.png", "0001.png"]
