"""The five microseg sample sets: registered under `kiln data sample`, deterministic, masks that match images.

.venv/bin/python -m pytest tests/data/test_segsets.py -q
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from data.cli import data
from data.samples import sample_kinds
from data.segsets import SEGSETS, ensure_segset, generate


def test_every_set_is_a_sample_kind() -> None:
    assert set(SEGSETS) <= set(sample_kinds())


@pytest.mark.parametrize("kind", sorted(SEGSETS))
def test_a_set_is_deterministic_and_has_foreground_and_background(kind: str, tmp_path: Path) -> None:
    first = generate(kind, tmp_path / "a", count=4, size=48, seed=3)
    again = generate(kind, tmp_path / "b", count=4, size=48, seed=3)
    other = generate(kind, tmp_path / "c", count=4, size=48, seed=4)
    names = sorted(p.name for p in (first / "images").iterdir())
    assert names == sorted(p.name for p in (first / "masks").iterdir()) == [f"{i:04d}.png" for i in range(4)]
    for name in names:
        assert (first / "images" / name).read_bytes() == (again / "images" / name).read_bytes()
    assert any((first / "images" / n).read_bytes() != (other / "images" / n).read_bytes() for n in names)
    masks = np.stack([cv2.imread(str(first / "masks" / n), cv2.IMREAD_GRAYSCALE) for n in names])
    image = cv2.imread(str(first / "images" / names[0]), cv2.IMREAD_UNCHANGED)
    assert image.shape == (48, 48, 3) and masks.shape == (4, 48, 48)
    assert set(np.unique(masks)) <= {0, 255}
    assert 0.001 < (masks > 0).mean() < 0.6, "a set must hold both foreground and background"


def test_kiln_data_sample_writes_a_set_and_refuses_bad_sizes(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(data, ["sample", "seg_cracks", str(tmp_path / "cracks"), "--count", "3", "--size", "40"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "cracks" / "masks").iterdir())) == 3
    bad = runner.invoke(data, ["sample", "seg_cracks", str(tmp_path / "small"), "--count", "3", "--size", "8"])
    assert bad.exit_code == 1 and "size >= 32" in bad.output


def test_ensure_segset_reuses_the_cached_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import data.samples

    monkeypatch.setattr(data.samples, "SAMPLES_DIR", tmp_path)
    folder = ensure_segset("seg_leaves", count=2, size=32, seed=0)
    stamp = (folder / "sample.json").stat().st_mtime_ns
    assert ensure_segset("seg_leaves", count=2, size=32, seed=0) == folder
    assert (folder / "sample.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="unknown segmentation set 'nope'"):
        ensure_segset("nope")
