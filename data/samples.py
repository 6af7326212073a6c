"""Registry of procedural sample-set generators behind `kiln data sample KIND DST`.

    kiln data sample safety data/samples/safety
    python -c "from data.samples import sample_kinds; print(sorted(sample_kinds()))"

A generator module registers its kinds with `@register_sample(name, summary)` and is listed in
SAMPLE_MODULES; nothing else changes to add a kind. Every generator takes a SampleRequest and writes a
deterministic set under `request.dst`: the same request gives byte-identical files.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path

# Modules whose import registers sample kinds (each uses @register_sample).
SAMPLE_MODULES: tuple[str, ...] = (
    "data.yolo_samples",
    "data.drawings",
    "data.spectra",
    "data.tabular",
    "data.segsets",
)


PACKAGE_DIR = Path(__file__).resolve().parent


def samples_dir(env: Mapping[str, str] = os.environ, package: Path = PACKAGE_DIR) -> Path:
    """Where entry points keep generated sample sets: KILN_SAMPLES_DIR; else data/samples/ of a source checkout
    (the paths the docs use); else, for an installed package (site-packages is no place to write), the working
    folder's .kiln/samples/."""
    if env.get("KILN_SAMPLES_DIR"):
        return Path(env["KILN_SAMPLES_DIR"]).expanduser().resolve()
    if any(part in ("site-packages", "dist-packages") for part in package.parts):
        return Path.cwd().resolve() / ".kiln" / "samples"
    return package / "samples"


SAMPLES_DIR = samples_dir()  # resolved once at import
STAMP = "sample.json"  # written last into every generated set: the request that made it


@dataclass(frozen=True)
class SampleRequest:
    dst: Path  # output folder (created; must be empty or hold an earlier sample set)
    count: int | None = None  # images in all splits; None = the kind's default
    size: int | None = None  # image side in pixels; None = the kind's default
    val: float = 0.2  # share of images in the validation split
    seed: int = 0  # the same seed gives the same files


@dataclass(frozen=True)
class SampleKind:
    name: str  # what `kiln data sample NAME` takes
    summary: str  # one line for --help
    make: Callable[[SampleRequest], Path]  # writes the set, returns its dataset YAML (or main file)
    version: int  # bump when the generator's output changes, so cached sets are rebuilt


SAMPLES: dict[str, SampleKind] = {}


def register_sample(
    name: str, summary: str, version: int = 1
) -> Callable[[Callable[[SampleRequest], Path]], Callable[[SampleRequest], Path]]:
    def add(make: Callable[[SampleRequest], Path]) -> Callable[[SampleRequest], Path]:
        if name in SAMPLES and SAMPLES[name].make is not make:
            raise ValueError(f"sample kind {name!r} is registered twice")
        SAMPLES[name] = SampleKind(name, summary, make, version)
        return make

    return add


def sample_kinds() -> dict[str, SampleKind]:
    for module in SAMPLE_MODULES:
        importlib.import_module(module)
    return SAMPLES


def get_kind(name: str) -> SampleKind:
    kinds = sample_kinds()
    if name not in kinds:
        raise ValueError(f"unknown sample kind {name!r}; known: {sorted(kinds)}")
    return kinds[name]


def _stamp(kind: SampleKind, request: SampleRequest) -> dict[str, object]:
    fields = {k: v for k, v in asdict(request).items() if k != "dst"}
    return {"kind": kind.name, "version": kind.version, **fields}


def make_sample(name: str, request: SampleRequest) -> Path:
    """Write the set into `request.dst`, replacing an earlier generated set there (never other files)."""
    kind = get_kind(name)
    dst = request.dst
    if dst.exists() and any(dst.iterdir()) and not (dst / STAMP).is_file():
        raise ValueError(f"{dst}: folder is not empty and holds no {STAMP}; refusing to overwrite it")
    if dst.exists():
        shutil.rmtree(dst)
    result = kind.make(request)
    (dst / STAMP).write_text(json.dumps(_stamp(kind, request), indent=2) + "\n")
    return result


def ensure_sample(name: str, request: SampleRequest) -> Path:
    """The set for `request`, generated once and reused while the stamp matches (safe with parallel runs)."""
    kind = get_kind(name)
    stamp_path = request.dst / STAMP
    if stamp_path.is_file() and json.loads(stamp_path.read_text()) == _stamp(kind, request):
        return _result_path(request.dst)
    request.dst.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    say(f"Generating the {name} sample set in {request.dst} (once; later runs reuse it)")
    staging = Path(tempfile.mkdtemp(prefix=f".{request.dst.name}-", dir=request.dst.parent))
    make_sample(name, replace(request, dst=staging / "set"))
    _swap_in(staging / "set", request.dst)
    shutil.rmtree(staging, ignore_errors=True)
    say(f"Generated the {name} sample set in {time.monotonic() - started:.1f} s")
    return _result_path(request.dst)


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Progress:
    """A line every `every` seconds while a generator works, and one at the end; nothing for a quick set.

    >>> progress = Progress("safety sample", 600, "images")
    >>> for i in range(600): ...; progress.update(i + 1)  # doctest: +SKIP
    """

    def __init__(self, label: str, total: int, unit: str, every: float = 3.0) -> None:
        self.label, self.total, self.unit, self.every = label, total, unit, every
        self.started = self.last = time.monotonic()
        self.shown = False

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last < self.every and not (done >= self.total and self.shown):
            return
        self.last, self.shown = now, True
        rate = done / max(now - self.started, 1e-9)
        left = f", about {(self.total - done) / rate:.0f} s left" if done < self.total and rate > 0 else ""
        say(f"  {self.label}: {done}/{self.total} {self.unit} ({100 * done // max(self.total, 1)}%){left}")


def _swap_in(built: Path, dst: Path) -> None:
    """Replace `dst` by `built` with renames, so a reader never sees a half-written set."""
    old = dst.with_name(f".{dst.name}-old-{built.parent.name}")
    if dst.exists():
        dst.rename(old)
    try:
        built.rename(dst)
    except OSError:
        if not dst.exists():  # someone else's identical set landed first; ours is redundant
            raise
    shutil.rmtree(old, ignore_errors=True)


def _result_path(folder: Path) -> Path:
    yaml_path = folder / "data.yaml"
    return yaml_path if yaml_path.is_file() else folder
