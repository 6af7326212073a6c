"""Generate a CR_recon sample: binary metasurface structures and the spectra a physical proxy assigns them.

    python -m data.spectra --out /tmp/spectra --num-samples 4000

Writes `struct_<i>.npy` (N, 1, 128, 128) uint8 in {0, 255} and `spectra_<i>.npy` (N, 3, 301) float32 (R, G, B
efficiency over 400-700 nm in 1 nm steps), the layout of the seed's color-router data. Like the seed's
preallocated arrays, each file ends with a few all-zero rows that preprocessing must drop.

The proxy is deterministic and smooth, so the mapping is learnable, and it is built to respect the
symmetry the 180-degree augmentation relies on: rotating a structure by 180 degrees swaps its R and B
spectra exactly. For each Bayer quadrant (R top-left, G top-right and bottom-left, B bottom-right):

1. The pixel collects light from a Gaussian neighbourhood of its quadrant centre whose radius grows with
   wavelength (diffraction), so the local fill fraction f_q(lambda) is wavelength dependent.
2. That fill sets an effective index n = 1 + 0.9 f, and a thin-film Fabry-Perot layer of height h gives the
   transmission T_q(lambda) = 1 / (1 + F sin^2(2 pi n h / lambda)).
3. Fine structures scatter more: a crosstalk share d, set by the pattern's mean spatial frequency, is
   spread evenly over the four pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from data.samples import SAMPLES_DIR, Progress, SampleRequest, register_sample
from data.samples import ensure_sample as ensure_registered_sample

SIZE = 128  # structure image side, pixels (one 2x2 Bayer cell)
WAVELENGTHS = np.linspace(400.0, 700.0, 301)  # nm, the seed's 301 spectral samples
# Quadrant centres in pixel coordinates, symmetric under i -> SIZE - 1 - i (a 180-degree rotation).
_CENTRES = {"R": (31.5, 31.5), "G1": (31.5, 95.5), "G2": (95.5, 31.5), "B": (95.5, 95.5)}
_ANCHOR_NM = np.array([400.0, 550.0, 700.0])  # wavelengths at which the collection radius is fixed
_ANCHOR_SIGMA = np.array([14.0, 22.0, 32.0])  # collection radius (pixels) at those wavelengths
DEFAULT_DIR = SAMPLES_DIR / "spectra"


@dataclass
class ProxyConfig:
    height_nm: float = 520.0  # Fabry-Perot layer height
    finesse: float = 4.0  # coefficient of finesse F; higher = sharper fringes
    index_gain: float = 0.9  # n = 1 + index_gain * fill
    crosstalk_min: float = 0.08  # crosstalk share for the coarsest patterns
    crosstalk_max: float = 0.45  # crosstalk share for the finest patterns


def _periodic_distance(coord: np.ndarray, centre: float) -> np.ndarray:
    d = np.abs(coord - centre)
    return np.asarray(np.minimum(d, SIZE - d))


def collection_windows() -> np.ndarray:
    """(4 quadrants, 3 anchors, SIZE*SIZE) normalised periodic Gaussian windows."""
    yy, xx = np.meshgrid(np.arange(SIZE, dtype=np.float64), np.arange(SIZE, dtype=np.float64), indexing="ij")
    windows = np.empty((len(_CENTRES), len(_ANCHOR_SIGMA), SIZE * SIZE))
    for qi, (cy, cx) in enumerate(_CENTRES.values()):
        r2 = _periodic_distance(yy, cy) ** 2 + _periodic_distance(xx, cx) ** 2
        for ai, sigma in enumerate(_ANCHOR_SIGMA):
            w = np.exp(-r2 / (2 * sigma**2)).ravel()
            windows[qi, ai] = w / w.sum()
    return windows


def random_structures(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, SIZE, SIZE) bool: smoothed periodic noise thresholded around per-quadrant fill targets."""
    noise = rng.standard_normal((n, SIZE, SIZE))
    ky = np.fft.fftfreq(SIZE)[:, None]
    kx = np.fft.fftfreq(SIZE)[None, :]
    k2 = ky**2 + kx**2
    corr = rng.uniform(2.0, 7.0, size=(n, 1, 1))  # correlation length in pixels: the feature size
    field = np.fft.ifft2(np.fft.fft2(noise) * np.exp(-2 * (np.pi**2) * k2 * corr**2)).real
    field /= field.std(axis=(1, 2), keepdims=True) + 1e-12
    # A smooth periodic bias per quadrant makes the four pixels see different fill fractions.
    bias_q = rng.uniform(-0.9, 0.9, size=(n, 2, 2))
    # 0 at the first quadrant's centre (pixel 31.5), 1 at the second's (95.5), periodic.
    ramp = 0.5 - 0.5 * np.cos(2 * np.pi * (np.arange(SIZE) - 31.5) / SIZE)
    wy, wx = ramp[:, None], ramp[None, :]
    bias = (
        bias_q[:, 0, 0, None, None] * (1 - wy) * (1 - wx)
        + bias_q[:, 0, 1, None, None] * (1 - wy) * wx
        + bias_q[:, 1, 0, None, None] * wy * (1 - wx)
        + bias_q[:, 1, 1, None, None] * wy * wx
    )
    return (field + bias) > 0


def mean_spatial_frequency(structs: np.ndarray) -> np.ndarray:
    """Power-weighted mean |k| (cycles/pixel) of each pattern; invariant to rotation by 180 degrees."""
    centred = structs.astype(np.float64) - structs.mean(axis=(1, 2), keepdims=True)
    power = np.abs(np.fft.fft2(centred)) ** 2
    k = np.sqrt(np.fft.fftfreq(SIZE)[:, None] ** 2 + np.fft.fftfreq(SIZE)[None, :] ** 2)
    return np.asarray((power * k).sum(axis=(1, 2)) / (power.sum(axis=(1, 2)) + 1e-12))


def proxy_spectra(structs: np.ndarray, cfg: ProxyConfig | None = None) -> np.ndarray:
    """(n, SIZE, SIZE) binary structures -> (n, 3, 301) float32 R, G, B efficiency spectra."""
    cfg = cfg or ProxyConfig()
    flat = structs.reshape(len(structs), -1).astype(np.float64)
    windows = collection_windows()  # (4, 3, P)
    anchor_fill = np.einsum("np,qap->nqa", flat, windows)  # (n, 4, 3)
    # Linear interpolation of the fill between anchor wavelengths.
    weights = np.stack([np.interp(WAVELENGTHS, _ANCHOR_NM, np.eye(3)[a]) for a in range(3)])  # (3, L)
    fill = np.einsum("nqa,al->nql", anchor_fill, weights)  # (n, 4, L)
    index = 1.0 + cfg.index_gain * fill
    phase = 2 * np.pi * index * cfg.height_nm / WAVELENGTHS
    transmission = 1.0 / (1.0 + cfg.finesse * np.sin(phase) ** 2)  # (n, 4, L)
    freq = mean_spatial_frequency(structs)
    lo, hi = 0.04, 0.125  # the generator's range of mean spatial frequency (cycles/pixel)
    share = np.clip((freq - lo) / (hi - lo), 0.0, 1.0)
    crosstalk = (cfg.crosstalk_min + (cfg.crosstalk_max - cfg.crosstalk_min) * share)[:, None, None]
    routed = (1 - crosstalk) * transmission + crosstalk * transmission.mean(axis=1, keepdims=True)
    r, g1, g2, b = routed[:, 0], routed[:, 1], routed[:, 2], routed[:, 3]
    return np.stack([r, (g1 + g2) / 2, b], axis=1).astype(np.float32)


def generate(
    out_dir: Path,
    num_samples: int = 4000,
    num_files: int = 2,
    pad_fraction: float = 0.03,
    seed: int = 0,
    chunk: int = 256,
) -> list[Path]:
    """Write `num_files` struct/spectra pairs holding `num_samples` valid samples plus zero padding rows."""
    if num_samples < num_files or num_files < 1:
        raise ValueError(f"num_samples ({num_samples}) must be >= num_files ({num_files}) >= 1")
    if not 0 <= pad_fraction < 1:
        raise ValueError(f"pad_fraction must be in [0, 1), got {pad_fraction}")
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sizes = np.full(num_files, num_samples // num_files)
    sizes[: num_samples % num_files] += 1
    written: list[Path] = []
    progress, done = Progress("spectra sample", num_samples, "samples"), 0
    for index, size in enumerate(sizes):
        pad = int(round(size * pad_fraction))
        structs = np.zeros((size + pad, 1, SIZE, SIZE), dtype=np.uint8)
        spectra = np.zeros((size + pad, 3, len(WAVELENGTHS)), dtype=np.float32)
        for start in range(0, size, chunk):
            stop = min(start + chunk, size)
            batch = random_structures(stop - start, rng)
            structs[start:stop, 0] = batch.astype(np.uint8) * 255
            spectra[start:stop] = proxy_spectra(batch)
            done += stop - start
            progress.update(done)
        written += [_save(out_dir / f"struct_{index}.npy", structs), _save(out_dir / f"spectra_{index}.npy", spectra)]
    return written


def _save(path: Path, array: np.ndarray) -> Path:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array)
    tmp.replace(path)
    return path


@register_sample("spectra", "CR_recon structures + spectra from a physical proxy (--size/--val unused)")
def _sample(request: SampleRequest) -> Path:
    generate(request.dst, num_samples=request.count or 4000, seed=request.seed)
    return request.dst


def ensure_sample(num_samples: int = 4000, seed: int = 0) -> Path:
    """The generated set under `data/samples/spectra/n<num_samples>`, made once and reused."""
    request = SampleRequest(DEFAULT_DIR / f"n{num_samples}_s{seed}", count=num_samples, seed=seed)
    return ensure_registered_sample("spectra", request)


@click.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), required=True)
@click.option("--num-samples", type=click.IntRange(min=1), default=4000, show_default=True)
@click.option("--num-files", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--pad-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.03, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def main(out_dir: Path, num_samples: int, num_files: int, pad_fraction: float, seed: int) -> None:
    """Write the generated CR_recon sample."""
    try:
        paths = generate(out_dir, num_samples, num_files, pad_fraction, seed)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    for path in paths:
        click.echo(path)


if __name__ == "__main__":
    main()
