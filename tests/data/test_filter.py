"""`kiln data filter`: each kind of bad image lands in rejected/<reason>/, the report scores every image.

.venv/bin/python -m pytest tests/data/test_filter.py -q
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
from click.testing import CliRunner

from data.cli import data
from data.filter import FilterOptions, filter_images, phash


def scene(seed: int, size: int = 128) -> np.ndarray:
    """A textured image: low-frequency colour blobs plus fine detail, different for every seed."""
    rng = np.random.default_rng(seed)
    coarse = cv2.resize(rng.integers(40, 215, (6, 6, 3), dtype=np.uint8), (size, size), interpolation=cv2.INTER_CUBIC)
    fine = rng.normal(0, 18, (size, size, 3))
    return np.clip(coarse + fine, 0, 255).astype(np.uint8)


def write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def make_folder(root: Path) -> Path:
    images = root / "images"
    for i in range(4):
        write(images / f"good{i}.png", scene(i))
    write(images / "blurry.png", cv2.GaussianBlur(scene(10), (0, 0), 6))
    write(images / "dark.png", (scene(11) * 0.08).astype(np.uint8))
    write(images / "bright.png", np.clip(scene(12).astype(int) + 200, 0, 255).astype(np.uint8))
    clipped = scene(13)
    clipped[:, :64] = 0
    clipped[:, 64:] = np.where(np.arange(64)[None, :, None] % 2, 255, clipped[:, 64:])
    write(images / "clipped.png", clipped)
    write(images / "tiny.png", scene(14, size=16))
    (images / "broken.jpg").write_bytes(cv2.imencode(".jpg", scene(15))[1].tobytes()[:300])
    write(images / "sub/zcopy.jpg", np.clip(scene(2).astype(int) + 6, 0, 255).astype(np.uint8))  # near-dup of good2
    return root


def read_report(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as f:
        return {row["path"]: row for row in csv.DictReader(f)}


def test_each_bad_image_is_rejected_for_its_reason(tmp_path: Path) -> None:
    dst = make_folder(tmp_path / "dst")
    result = filter_images(dst)
    report = read_report(dst / "filter_report.csv")
    verdicts = {Path(p).name: (row["verdict"], row["reason"]) for p, row in report.items()}
    assert verdicts == {
        **{f"good{i}.png": ("kept", "") for i in range(4)},
        "blurry.png": ("rejected", "blurry"),
        "dark.png": ("rejected", "too_dark"),
        "bright.png": ("rejected", "too_bright"),
        "clipped.png": ("rejected", "clipped"),
        "tiny.png": ("rejected", "too_small"),
        "broken.jpg": ("rejected", "decode"),
        "zcopy.jpg": ("rejected", "duplicate"),
    }
    assert report["images/sub/zcopy.jpg"]["duplicate_of"] == "images/good2.png"
    assert int(report["images/sub/zcopy.jpg"]["distance"]) <= 6
    assert float(report["images/blurry.png"]["blur"]) < 30 < float(report["images/good0.png"]["blur"])
    assert "cannot decode" in report["images/broken.jpg"]["detail"]
    assert (dst / "rejected/duplicate/sub/zcopy.jpg").is_file()
    assert (dst / "rejected/decode/broken.jpg").is_file()
    assert sorted(p.name for p in (dst / "images").rglob("*.*")) == [f"good{i}.png" for i in range(4)]
    assert result.counts() == {"kept": 4, **{r: 1 for r in ("blurry", "too_dark", "too_bright", "clipped")}} | {
        "too_small": 1, "decode": 1, "duplicate": 1,
    }  # fmt: skip


def test_second_run_checks_only_new_images_against_the_kept_ones(tmp_path: Path) -> None:
    dst = make_folder(tmp_path / "dst")
    filter_images(dst)
    write(dst / "images/later_dup.png", scene(0))  # the same as a kept image
    write(dst / "images/later_new.png", scene(40))
    result = filter_images(dst)
    assert result.already_checked == 4
    assert {r.path: r.reason for r in result.rows} == {
        "images/later_dup.png": "duplicate",
        "images/later_new.png": "",
    }
    assert (dst / "rejected/duplicate/later_dup.png").is_file()


def test_dry_run_moves_nothing_and_thresholds_are_options(tmp_path: Path) -> None:
    dst = make_folder(tmp_path / "dst")
    out = CliRunner().invoke(data, ["filter", str(dst), "--dry-run", "--min-side", "8", "--min-blur", "0"])
    assert out.exit_code == 0, out.output
    assert "would move" in out.output
    assert not (dst / "rejected").exists()
    report = read_report(dst / "filter_report.csv")
    assert report["images/tiny.png"]["verdict"] == "kept"  # 16 px passes --min-side 8
    assert report["images/blurry.png"]["verdict"] == "kept"  # --min-blur 0 lets any sharpness through
    out = CliRunner().invoke(data, ["filter", str(dst), "--min-brightness", "240", "--max-brightness", "200"])
    assert out.exit_code == 1 and "--min-brightness" in out.output and "Traceback" not in out.output
    out = CliRunner().invoke(data, ["filter", str(tmp_path / "empty")])
    assert out.exit_code == 1 and "no images/ folder" in out.output


def test_phash_is_stable_under_small_changes_and_differs_between_scenes() -> None:
    grey = cv2.cvtColor(scene(1), cv2.COLOR_BGR2GRAY)
    brighter = np.clip(grey.astype(int) + 10, 0, 255).astype(np.uint8)
    half = cv2.resize(grey, (64, 64), interpolation=cv2.INTER_AREA)
    other = cv2.cvtColor(scene(2), cv2.COLOR_BGR2GRAY)
    dist = lambda a, b: bin(phash(a) ^ phash(b)).count("1")  # noqa: E731
    assert dist(grey, brighter) <= 4 and dist(grey, half) <= 6
    assert dist(grey, other) > 12
    assert FilterOptions().check().max_distance == 6
