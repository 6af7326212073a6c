"""CR_recon data: preprocess raw structure/spectra files once, cache as .npy, memory-map on later runs.

    python -m projects.cr_recon.data data/samples/spectra   # preprocess (or find the cache) and print a summary

Input is a folder of `struct_*.npy` (N, 1, 128, 128) uint8 and `spectra_*.npy` (N, 3, L) float32 pairs,
matched by their suffix, as in the seed. Preprocessing

1. drops zero-padded samples (all-zero spectra: the seed's arrays were preallocated and part-filled),
2. converts R, G, B to the Bayer grid [[R, G], [G, B]] -> (2, 2, L),
3. downsamples L bins (301 in the seed) to `out_len` (30) by averaging, as adaptive average pooling does,

and writes `struct.npy` (M, 1, 128, 128) uint8 in [0, 255] and `bayer.npy` (M, 2, 2, out_len) float32 under
`<cache_dir>/<key>/`, where the key hashes the source files' names, sizes and mtimes and the settings.
Later runs memory-map those files, so start-up takes milliseconds and workers share the pages.

The 180-degree augmentation doubles the training set: sample i + M is sample i with the structure rotated
by 180 degrees and the 2x2 grid rotated with it, which swaps R and B (and the two G pixels).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from core.errors import DatasetError

CACHE_VERSION = 1  # bump when preprocessing changes, so stale caches are not reused


class DataError(DatasetError, ValueError):
    """A dataset folder or file that cannot be used; the message names it."""


@dataclass
class Prepared:
    struct: np.ndarray  # (M, 1, H, W) uint8, memory-mapped
    bayer: np.ndarray  # (M, 2, 2, out_len) float32, memory-mapped
    cache_dir: Path
    info: dict[str, object]  # counts and sources, logged with the dataset


def rgb_to_bayer(spectra: np.ndarray) -> np.ndarray:
    """(..., 3, L) R, G, B -> (..., 2, 2, L) [[R, G], [G, B]]."""
    if spectra.shape[-2] != 3:
        raise DataError(f"spectra must have 3 channels (R, G, B) on axis -2, got shape {spectra.shape}")
    r, g, b = spectra[..., 0, :], spectra[..., 1, :], spectra[..., 2, :]
    top = np.stack([r, g], axis=-2)
    bottom = np.stack([g, b], axis=-2)
    return np.stack([top, bottom], axis=-3)


def downsample_bins(spectra: np.ndarray, out_len: int) -> np.ndarray:
    """Average the last axis into `out_len` bins: bin i spans [floor(i L / n), ceil((i + 1) L / n))."""
    length = spectra.shape[-1]
    if not 1 <= out_len <= length:
        raise DataError(f"out_len must be between 1 and the {length} input bins, got {out_len}")
    starts = (np.arange(out_len) * length) // out_len
    stops = -((-(np.arange(1, out_len + 1)) * length) // out_len)
    csum = np.concatenate([np.zeros(spectra.shape[:-1] + (1,)), np.cumsum(spectra, axis=-1, dtype=np.float64)], -1)
    sums = csum[..., stops] - csum[..., starts]
    return np.asarray(sums / (stops - starts), np.float32)


def valid_rows(spectra: np.ndarray) -> np.ndarray:
    """Rows that are not zero padding: at least one non-zero spectrum value."""
    flat = spectra.reshape(len(spectra), -1)
    return np.asarray(np.any(flat != 0, axis=1))


def find_pairs(data_dir: Path) -> list[tuple[Path, Path]]:
    """Match `struct_<id>.npy` with `spectra_<id>.npy`; refuse a folder with none or with orphans."""
    if not data_dir.is_dir():
        raise DataError(f"data folder not found: {data_dir}")
    structs = {_suffix(p): p for p in data_dir.glob("struct_*.npy")}
    spectra = {_suffix(p): p for p in data_dir.glob("spectra_*.npy")}
    if not structs:
        raise DataError(f"{data_dir}: no struct_*.npy files (expected struct_<id>.npy + spectra_<id>.npy pairs)")
    orphans = sorted(set(structs) ^ set(spectra))
    if orphans:
        raise DataError(f"{data_dir}: unmatched struct/spectra files for id(s) {orphans}")
    return [(structs[k], spectra[k]) for k in sorted(structs, key=_natural)]


def _suffix(path: Path) -> str:
    return path.stem.split("_", 1)[1]


def _natural(key: str) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


def cache_key(pairs: list[tuple[Path, Path]], out_len: int, flip_sign: bool) -> str:
    digest = hashlib.sha256(f"v{CACHE_VERSION}|{out_len}|{flip_sign}".encode())
    for struct_path, spectra_path in pairs:
        for path in (struct_path, spectra_path):
            stat = path.stat()
            digest.update(f"|{path.name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _load_checked(struct_path: Path, spectra_path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        struct = np.load(struct_path, mmap_mode="r")
        spectra = np.load(spectra_path, mmap_mode="r")
    except (ValueError, OSError) as exc:
        raise DataError(f"cannot read {struct_path.name} / {spectra_path.name}: {exc}") from None
    if struct.ndim != 4 or struct.shape[1] != 1:
        raise DataError(f"{struct_path}: expected shape (N, 1, H, W), got {struct.shape}")
    if spectra.ndim != 3 or spectra.shape[1] != 3:
        raise DataError(f"{spectra_path}: expected shape (N, 3, L), got {spectra.shape}")
    if len(struct) != len(spectra):
        raise DataError(f"{struct_path.name} has {len(struct)} samples but {spectra_path.name} has {len(spectra)}")
    return struct, spectra


def _structure_scale(struct: np.ndarray, path: Path) -> int:
    """255 for {0, 1} masks, 1 for images already in [0, 255]."""
    if struct.dtype != np.uint8:
        raise DataError(f"{path}: expected uint8 structures, got {struct.dtype}")
    peak = int(struct.max()) if struct.size else 0
    return 255 if peak <= 1 else 1


def preprocess(data_dir: Path, cache_root: Path, out_len: int = 30, flip_sign: bool = False) -> Prepared:
    """Build (or reuse) the cache for `data_dir` and return it memory-mapped."""
    pairs = find_pairs(data_dir)
    target = cache_root / cache_key(pairs, out_len, flip_sign)
    if not (target / "info.json").is_file():
        _build_cache(pairs, target, out_len, flip_sign)
    info = json.loads((target / "info.json").read_text())
    struct = np.load(target / "struct.npy", mmap_mode="r")
    bayer = np.load(target / "bayer.npy", mmap_mode="r")
    return Prepared(struct, bayer, target, info)


def _build_cache(pairs: list[tuple[Path, Path]], target: Path, out_len: int, flip_sign: bool) -> None:
    loaded = [_load_checked(s, p) for s, p in pairs]
    shapes = {s.shape[1:] for s, _ in loaded}
    if len(shapes) != 1:
        raise DataError(f"structure files disagree on shape: {sorted(shapes)}")
    masks = [valid_rows(np.asarray(spectra)) for _, spectra in loaded]
    for (_, spectra_path), (_, spectra) in zip(pairs, loaded, strict=True):
        bad = int((~np.isfinite(np.asarray(spectra))).any(axis=(1, 2)).sum())
        if bad:
            raise DataError(f"{spectra_path}: {bad} sample(s) hold NaN or infinite spectrum values")
    total = int(sum(m.sum() for m in masks))
    if total == 0:
        raise DataError(f"{pairs[0][0].parent}: every sample is zero padding; nothing to train on")
    target.mkdir(parents=True, exist_ok=True)
    tmp = target / "build.tmp"
    tmp.mkdir(exist_ok=True)
    struct_out = np.lib.format.open_memmap(tmp / "struct.npy", "w+", np.uint8, (total, *shapes.pop()))
    bayer_out = np.lib.format.open_memmap(tmp / "bayer.npy", "w+", np.float32, (total, 2, 2, out_len))
    at = 0
    for (struct_path, _), (struct, spectra), mask in zip(pairs, loaded, masks, strict=True):
        scale = _structure_scale(struct, struct_path)
        rows = np.flatnonzero(mask)
        for start in range(0, len(rows), 1024):  # chunks keep memory flat for multi-GB inputs
            idx = rows[start : start + 1024]
            struct_out[at : at + len(idx)] = np.asarray(struct[idx]) * scale
            spec = np.asarray(spectra[idx], dtype=np.float32)
            bayer_out[at : at + len(idx)] = downsample_bins(rgb_to_bayer(-spec if flip_sign else spec), out_len)
            at += len(idx)
    struct_out.flush()
    bayer_out.flush()
    del struct_out, bayer_out
    for name in ("struct.npy", "bayer.npy"):
        (tmp / name).replace(target / name)
    tmp.rmdir()
    info = {
        "sources": [[s.name, p.name] for s, p in pairs],
        "raw_samples": int(sum(len(m) for m in masks)),
        "samples": total,
        "dropped_zero_padded": int(sum(len(m) - m.sum() for m in masks)),
        "raw_bins": int(loaded[0][1].shape[-1]),
        "out_len": out_len,
        "flip_sign": flip_sign,
    }
    (target / "info.json").write_text(json.dumps(info, indent=2))  # written last: marks the cache complete


def rotate_180(struct: np.ndarray, bayer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotate a (1, H, W) structure and its (2, 2, L) spectra by 180 degrees: R <-> B, G1 <-> G2."""
    return struct[..., ::-1, ::-1], bayer[::-1, ::-1, :]


class CRDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Samples `indices` of a prepared set; with `augment_180` the length doubles with rotated copies.

    Structures are mapped from [0, 255] to [-1, 1]; spectra are returned as (2, 2, out_len) float32.
    """

    def __init__(self, prepared: Prepared, indices: np.ndarray, augment_180: bool = False) -> None:
        self.struct, self.bayer = prepared.struct, prepared.bayer
        self.indices = np.asarray(indices, dtype=np.int64)
        self.augment_180 = augment_180

    def __len__(self) -> int:
        return len(self.indices) * (2 if self.augment_180 else 1)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        base = self.indices[i % len(self.indices)]
        struct, bayer = self.struct[base], self.bayer[base]
        if i >= len(self.indices):
            struct, bayer = rotate_180(struct, bayer)
        x = torch.from_numpy(np.ascontiguousarray(struct, dtype=np.float32)) / 127.5 - 1.0
        return x, torch.from_numpy(np.array(bayer, dtype=np.float32))


def split_indices(n: int, train_ratio: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded shuffle split into train and val (both non-empty)."""
    if not 0 < train_ratio < 1:
        raise DataError(f"train_ratio must be between 0 and 1 (exclusive), got {train_ratio}")
    if n < 2:
        raise DataError(f"need at least 2 samples to split into train and val, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    cut = min(max(int(round(n * train_ratio)), 1), n - 1)
    return np.sort(order[:cut]), np.sort(order[cut:])


def make_loaders(
    prepared: Prepared,
    batch_size: int,
    train_ratio: float,
    augment_180: bool,
    seed: int,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> tuple[DataLoader[tuple[torch.Tensor, torch.Tensor]], DataLoader[tuple[torch.Tensor, torch.Tensor]]]:
    """Train (shuffled, augmented when asked) and val (in order, never augmented) loaders."""
    train_idx, val_idx = split_indices(len(prepared.bayer), train_ratio, seed)
    train = CRDataset(prepared, train_idx, augment_180=augment_180)
    val = CRDataset(prepared, val_idx)
    generator = torch.Generator().manual_seed(seed)
    common: dict[str, Any] = {"batch_size": batch_size, "num_workers": num_workers, "pin_memory": pin_memory}
    common["persistent_workers"] = num_workers > 0
    train_loader = DataLoader(train, shuffle=True, drop_last=len(train) > batch_size, generator=generator, **common)
    return train_loader, DataLoader(val, shuffle=False, **common)


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python -m projects.cr_recon.data DATA_DIR")
    data_dir = Path(argv[0])
    prepared = preprocess(data_dir, data_dir / ".cache")
    print(json.dumps({"cache": str(prepared.cache_dir), **prepared.info}, indent=2))


if __name__ == "__main__":
    from core.scripts import script_args

    main(script_args(sys.argv[1:], "python -m projects.cr_recon.data DATA_DIR", __doc__, range(1, 2)))
