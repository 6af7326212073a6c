"""Frozen dataset versions: `kiln data version DST --name NAME`, `kiln data versions NAME`, `kiln data diff A B`,
and `dataset:NAME@vN` URIs that training resolves to a local copy.

    kiln data version data/door --name door -m "first 200 reviewed"
    kiln data diff door@v1 door@latest
    python -c "from data.versions import resolve_dataset_uri; print(resolve_dataset_uri('dataset:door@latest'))"

A version is an MLflow run in the experiment `kiln-datasets` (so a team's tracking server shares it): its
`manifest.json` lists every image and label file with its sha256, its split, its class counts, the model that
pre-labelled it and the review verdict, plus the class names and the parent version. File bytes are stored
content-addressed as `objects/<sha[:2]>/<sha>` artifacts, each only once: in the run of the version that
first held it; later manifests point there. The version's digest is the sha256 of its canonical content, so
freezing an unchanged folder again creates nothing. A version's run is never changed after it finishes;
only FINISHED runs count as versions, so a half-uploaded one (failed, killed) is never listed.

A folder with no images/ but `.npy` files at its top (cr_recon's `struct_*.npy` + `spectra_*.npy` pairs) is
frozen as kind `arrays`: each file with its sha256, shape and dtype; `kiln data versions` shows its sample
count and per-sample shapes instead of image and box counts, and `resolve_dataset_uri(..., kind="arrays")`
fetches it (a version of the other kind is refused, naming both).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import vocab
from core.errors import DatasetError, UserError
from data.loop import class_names, label_file
from data.yolo_layout import SPLITS, list_images

EXPERIMENT = "kiln-datasets"
MANIFEST = "manifest.json"
FORMAT = 1
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
REF_RE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{0,99})(?:@(?:v(?P<v>\d+)|(?P<n>\d+)|(?P<latest>latest)))?$")
TAG_NAME, TAG_VERSION, TAG_DIGEST = vocab.DATASET_NAME, vocab.DATASET_VERSION, vocab.DATASET_DIGEST
KINDS = {"images": "images with labels (and masks)", "arrays": "a folder of .npy arrays, as cr_recon trains on"}
FILE_KINDS = ("image", "label", "mask", "array")  # each stored file's <kind>_sha256 and <kind>_run keys


@dataclass(frozen=True)
class DatasetSettings:
    """Where fetched versions are kept: KILN_DATASET_CACHE."""

    dataset_cache: Path = Path("~/.cache/kiln/datasets")  # one folder per NAME/vN, verified by sha256


class VersionNotFound(DatasetError):
    status_code = 404
    code = "not_found"


@dataclass
class VersionInfo:
    name: str
    version: int
    run_id: str
    digest: str
    created_at: float
    manifest: dict[str, Any] = field(default_factory=dict)
    created: bool = True  # False when an identical version already existed
    images: int = 0  # from the run's metrics, so listing versions reads no manifest
    class_counts: dict[str, int] = field(default_factory=dict)
    message: str = ""  # the note given with -m (or by kiln data import)
    kind: str = "images"  # a key of KINDS
    samples: int = 0  # an arrays version: rows per file group (the largest group)
    shapes: str = ""  # an arrays version: "struct (1, 128, 128) uint8; spectra (3, 301) float32"

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}"


# ---------------------------------------------------------------------------------------------- refs


def parse_ref(ref: str) -> tuple[str, int | None]:
    """`NAME@v3`, `NAME@3` -> (NAME, 3); `NAME@latest` or `NAME` -> (NAME, None)."""
    match = REF_RE.match(ref.removeprefix("dataset:"))
    if not match:
        raise UserError(f"{ref!r} is not a dataset version; write NAME@vN or NAME@latest (e.g. door@v3)")
    number = match["v"] or match["n"]
    return match["name"], int(number) if number else None


def _client(tracking_uri: str | None = None) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _experiment_id(client: Any, create: bool) -> str | None:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        return str(experiment.experiment_id)
    if not create:
        return None
    try:
        return str(client.create_experiment(EXPERIMENT, tags={vocab.EXPERIMENT_KIND_TAG: vocab.TRAINING_KIND}))
    except Exception:  # another process created it first
        found = client.get_experiment_by_name(EXPERIMENT)
        if found is None:
            raise
        return str(found.experiment_id)


def _runs(client: Any, name: str, version: int | None = None, finished: bool = True) -> list[Any]:
    experiment_id = _experiment_id(client, create=False)
    if experiment_id is None:
        return []
    query = f"tags.`{TAG_NAME}` = '{name}'"
    if version is not None:
        query += f" and tags.`{TAG_VERSION}` = '{version}'"
    if finished:
        query += " and attributes.status = 'FINISHED'"
    runs = client.search_runs([experiment_id], query, max_results=5000)
    return sorted(runs, key=lambda r: (int(r.data.tags[TAG_VERSION]), r.info.start_time, r.info.run_id))


def _info(client: Any, run: Any, with_manifest: bool = True) -> VersionInfo:
    tags = run.data.tags
    info = VersionInfo(
        tags[TAG_NAME], int(tags[TAG_VERSION]), run.info.run_id, tags[TAG_DIGEST], run.info.start_time / 1000
    )
    metrics = run.data.metrics
    info.images = int(metrics.get("images", 0))
    info.class_counts = {k.removeprefix("boxes/"): int(v) for k, v in metrics.items() if k.startswith("boxes/")}
    info.message = tags.get(vocab.NOTE_TAG, "").partition("\n\n")[2]
    info.kind = tags.get(vocab.DATASET_KIND, "images")
    info.samples, info.shapes = int(metrics.get("samples", 0)), tags.get(vocab.DATASET_SHAPES, "")
    if with_manifest:
        info.manifest = _download_json(client, run.info.run_id, MANIFEST)
    return info


@contextlib.contextmanager
def _quiet_downloads() -> Iterator[None]:
    """No MLflow progress bar per manifest read: `kiln data diff` would print several."""
    before = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = before


def _download_json(client: Any, run_id: str, path: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, _quiet_downloads():
        local = client.download_artifacts(run_id, path, tmp)
        loaded: dict[str, Any] = json.loads(Path(local).read_text(encoding="utf-8"))
        return loaded


def list_versions(name: str, tracking_uri: str | None = None) -> list[VersionInfo]:
    client = _client(tracking_uri)
    return [_info(client, run, with_manifest=False) for run in _runs(client, name)]


def get_version(ref: str, tracking_uri: str | None = None) -> VersionInfo:
    """The version `ref` names, with its manifest; VersionNotFound naming what exists otherwise."""
    name, version = parse_ref(ref)
    client = _client(tracking_uri)
    runs = _runs(client, name)
    if not runs:
        raise VersionNotFound(f"dataset {name!r} has no versions in {_where(tracking_uri)}; create one with "
                              f"`kiln data version DST --name {name}`")  # fmt: skip
    if version is None:
        return _info(client, runs[-1])
    for run in runs:
        if int(run.data.tags[TAG_VERSION]) == version:
            return _info(client, run)
    known = ", ".join(f"v{r.data.tags[TAG_VERSION]}" for r in runs)
    raise VersionNotFound(
        f"dataset version {name}@v{version} does not exist in {_where(tracking_uri)} (known: {known})"
    )


def _where(tracking_uri: str | None) -> str:
    import mlflow

    return f"the tracking store {tracking_uri or mlflow.get_tracking_uri()}"


# ------------------------------------------------------------------------------------------- manifest


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _split_of(rel: str, image_sha: str, val: float) -> tuple[str, str]:
    """(split, path below the split): the folder's own split when images/<split>/ is used, else a split by
    the image's hash, which never moves an image between splits from one version to the next."""
    below = rel.removeprefix("images/")
    first, _, rest = below.partition("/")
    if first in SPLITS and rest:
        return first, rest
    return ("val" if int(image_sha[:8], 16) / 0x100000000 < val else "train"), below


def build_manifest(dst: Path, val: float = 0.2) -> dict[str, Any]:
    """Every labelled, not rejected image of DST with its label, hashes, split, counts and pre-labeller."""
    from data.review.store import ReviewStore

    if not 0.0 <= val < 1.0:
        raise UserError(f"--val must be in [0, 1), got {val}")
    names = class_names(dst)
    if not names:
        raise DatasetError(f"{dst}: no class names (data.yaml names or classes.txt); label some images first")
    reviews = {it["path"]: it for it in ReviewStore(dst).items()}
    entries = []
    for image in list_images(dst / "images"):
        rel = image.relative_to(dst).as_posix()
        labels = label_file(dst, rel)
        review = reviews.get(rel, {})
        if not labels.is_file() or review.get("status") == "rejected":
            continue  # not labelled by a person yet, or rejected in review
        entries.append(_entry(dst, rel, image, labels, review, names, val))
    if not entries:
        raise DatasetError(f"{dst}: no labelled images to freeze; review some with `kiln data review {dst}`")
    _ensure_val(entries, val)
    return _manifest(names, entries)


def _entry(
    dst: Path, rel: str, image: Path, labels: Path, review: dict[str, Any], names: list[str], val: float
) -> dict[str, Any]:
    image_sha, label_sha = sha256_file(image), sha256_file(labels)
    split, below = _split_of(rel, image_sha, val)
    mask = mask_file(dst, rel)  # segmentation sets (kiln data import of polygons or masks) carry masks/ too
    classes: Counter[str] = Counter()
    for number, line in enumerate(labels.read_text().splitlines(), 1):
        if not line.strip():
            continue
        cls = line.split()[0]
        if not cls.isdigit() or int(cls) >= len(names):
            raise DatasetError(f"{labels}:{number}: class id {cls!r} is not 0..{len(names) - 1}")
        classes[names[int(cls)]] += 1
    return {
        "path": rel, "split": split, "below": below, "image_sha256": image_sha, "image_size": image.stat().st_size,
        "label_sha256": label_sha, "boxes": dict(sorted(classes.items())),
        "prelabelled_by": review.get("model"), "verdict": review.get("status"),
    } | ({"mask_sha256": sha256_file(mask)} if mask.is_file() else {})  # fmt: skip


def mask_file(dst: Path, rel: str) -> Path:
    """The mask of image `rel` (relative to DST, starting with images/): masks/<same path>.png."""
    return (dst / "masks" / rel.removeprefix("images/")).with_suffix(".png")


def _ensure_val(entries: list[dict[str, Any]], val: float) -> None:
    """A hash split of a tiny set can leave val empty; then the image with the smallest hash goes there."""
    if val > 0 and len(entries) > 1 and not any(e["split"] == "val" for e in entries):
        hashed = [e for e in entries if e["below"] == e["path"].removeprefix("images/")]
        if hashed:
            min(hashed, key=lambda e: e["image_sha256"])["split"] = "val"


def _manifest(names: list[str], entries: list[dict[str, Any]]) -> dict[str, Any]:
    entries.sort(key=lambda e: e["path"])
    counts: Counter[str] = Counter()
    for entry in entries:
        counts.update(entry["boxes"])
    content = {"format": FORMAT, "names": names, "images": entries}
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    splits = Counter(e["split"] for e in entries)
    models = Counter(e["prelabelled_by"] or "none" for e in entries)
    return {
        **content,
        "digest": digest,
        "class_counts": {n: counts.get(n, 0) for n in names},
        "splits": {s: splits[s] for s in SPLITS if splits[s]},
        "prelabelled_by": dict(sorted(models.items())),
    }


def folder_kind(dst: Path) -> str:
    """`images` for a folder with images/, `arrays` for one with .npy files at its top; DatasetError otherwise."""
    if (dst / "images").is_dir():
        return "images"
    if dst.is_dir() and any(dst.glob("*.npy")):
        return "arrays"
    raise DatasetError(f"{dst}: neither an images/ folder (images, labels, masks) nor .npy arrays "
                       "(cr_recon's struct_*.npy + spectra_*.npy) to freeze")  # fmt: skip


def build_array_manifest(dst: Path) -> dict[str, Any]:
    """Every top-level .npy file of DST with its sha256, shape and dtype; files are grouped by the name
    before their first `_` (struct_0.npy, struct_1.npy -> struct) to count samples and name shapes."""
    import numpy as np

    entries: list[dict[str, Any]] = []
    for path in sorted(dst.glob("*.npy")):
        try:
            array = np.load(path, mmap_mode="r")
        except (ValueError, OSError) as exc:
            raise DatasetError(f"{path}: not a readable .npy array ({exc})") from None
        if array.ndim == 0:
            raise DatasetError(f"{path}: a scalar, not an array of samples")
        entries.append({"path": path.name, "array_sha256": sha256_file(path), "size": path.stat().st_size,
                        "shape": list(array.shape), "dtype": str(array.dtype)})  # fmt: skip
    content = {"format": FORMAT, "kind": "arrays", "files": entries}
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    groups: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        groups.setdefault(entry["path"].removesuffix(".npy").split("_", 1)[0], []).append(entry)
    rows = {g: sum(e["shape"][0] for e in group) for g, group in groups.items()}
    shapes: dict[str, str] = {}
    for g, group in groups.items():
        kinds = {(tuple(e["shape"][1:]), e["dtype"]) for e in group}
        shapes[g] = " ".join(map(str, kinds.pop())) if len(kinds) == 1 else "mixed shapes"
    return {**content, "digest": digest, "samples": max(rows.values()), "rows": rows, "shapes": shapes}


def shapes_text(manifest: dict[str, Any]) -> str:
    return "; ".join(f"{g} {s}" for g, s in manifest["shapes"].items())


# -------------------------------------------------------------------------------------------- create


def create_version(
    dst: str | Path,
    name: str,
    *,
    val: float = 0.2,
    message: str = "",
    tracking_uri: str | None = None,
) -> VersionInfo:
    """Freeze DST's labelled images (or its .npy arrays) into the next version of NAME; an unchanged folder
    returns the latest."""
    if not NAME_RE.match(name):
        raise UserError(f"dataset name {name!r}: use letters, digits, '_', '-' and '.', starting with a letter")
    dst = Path(dst).expanduser()
    kind = folder_kind(dst)
    manifest = build_manifest(dst, val) if kind == "images" else build_array_manifest(dst)
    client = _client(tracking_uri)
    previous = [_info(client, run) for run in _runs(client, name)]
    if previous and previous[-1].kind != kind:
        raise DatasetError(f"dataset {name!r} holds {previous[-1].kind} ({KINDS[previous[-1].kind]}) but {dst} "
                           f"holds {kind} ({KINDS[kind]}); freeze it under another --name")  # fmt: skip
    if previous and previous[-1].digest == manifest["digest"]:
        latest = previous[-1]
        latest.created = False
        return latest
    stored = {e[f"{k}_sha256"]: e[f"{k}_run"] for v in previous for e in _entries(v.manifest)
              for k in FILE_KINDS if f"{k}_sha256" in e}  # fmt: skip
    return _upload(client, dst, name, manifest, previous, stored, message)


def _upload(
    client: Any,
    dst: Path,
    name: str,
    manifest: dict[str, Any],
    previous: list[VersionInfo],
    stored: dict[str, str],
    message: str,
) -> VersionInfo:
    experiment_id = _experiment_id(client, create=True)
    version = (previous[-1].version if previous else 0) + 1
    run = None
    while run is None:
        tags = {TAG_NAME: name, TAG_VERSION: str(version), TAG_DIGEST: manifest["digest"]}
        run = client.create_run(experiment_id, run_name=f"{name}@v{version}", tags=tags)
        if _lost_race(client, name, version, run):
            client.delete_run(run.info.run_id)
            run, version = None, version + 1
    run_id = run.info.run_id
    try:
        parent = f"{name}@v{previous[-1].version}" if previous else None
        manifest.update(name=name, version=version, parent=parent, message=message, created_at=time.time())
        with tempfile.TemporaryDirectory() as tmp:
            new = _stage_objects(dst, manifest, stored, run_id, Path(tmp))
            if new:
                client.log_artifacts(run_id, str(Path(tmp) / "objects"), "objects")
            client.log_text(run_id, json.dumps(manifest, indent=1), MANIFEST)
        if "files" in manifest:  # an arrays version
            client.log_metric(run_id, "samples", manifest["samples"])
            client.log_metric(run_id, "files", len(manifest["files"]))
            client.set_tag(run_id, vocab.DATASET_SHAPES, shapes_text(manifest))
        else:
            client.log_metric(run_id, "images", len(manifest["images"]))
        client.log_metric(run_id, "new_files", new)
        for cls, n in manifest.get("class_counts", {}).items():
            client.log_metric(run_id, f"boxes/{cls}", n)
        client.set_tag(run_id, vocab.DATASET_KIND, manifest.get("kind", "images"))
        client.set_tag(run_id, vocab.NOTE_TAG, _note(manifest))
        if parent:
            client.set_tag(run_id, vocab.DATASET_PARENT, parent)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    info = VersionInfo(name, version, run_id, manifest["digest"], time.time(), manifest)
    info.kind, info.samples = manifest.get("kind", "images"), manifest.get("samples", 0)
    info.shapes = shapes_text(manifest) if "shapes" in manifest else ""
    return info


def _lost_race(client: Any, name: str, version: int, ours: Any) -> bool:
    """Two people froze the same version number at once: the earlier run keeps it, the later tries the next."""
    rivals = [r for r in _runs(client, name, version, finished=False) if r.info.status in ("RUNNING", "FINISHED")]
    first = min(rivals, key=lambda r: (r.info.start_time, r.info.run_id), default=ours)
    return bool(first.info.run_id != ours.info.run_id)


def _stage_objects(dst: Path, manifest: dict[str, Any], stored: dict[str, str], run_id: str, tmp: Path) -> int:
    """Copy the files no earlier version holds to tmp/objects/<sha[:2]>/<sha>; note where each file lives."""
    new = 0
    for entry, kind, source, _ in _stored_files(manifest, dst):
        sha = entry[f"{kind}_sha256"]
        if sha in stored:
            entry[f"{kind}_run"] = stored[sha]
            continue
        target = tmp / "objects" / sha[:2] / sha
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            new += 1
        stored[sha] = entry[f"{kind}_run"] = run_id
    return new


def _entries(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The manifest's entries: images (with labels and masks), or an arrays version's files."""
    entries: list[dict[str, Any]] = manifest.get("files", manifest.get("images", []))
    return entries


def _stored_files(manifest: dict[str, Any], dst: Path) -> Iterator[tuple[dict[str, Any], str, Path, Path]]:
    """(entry, file kind, its path in the frozen folder DST, its path in a fetched copy) for every file."""
    if "files" in manifest:
        for entry in manifest["files"]:
            yield entry, "array", dst / entry["path"], Path(entry["path"])
        return
    for entry in manifest["images"]:
        split, below = entry["split"], Path(entry["below"])
        for kind, source, target in (
            ("image", dst / entry["path"], Path("images", split, below)),
            ("label", label_file(dst, entry["path"]), Path("labels", split, below).with_suffix(".txt")),
            ("mask", mask_file(dst, entry["path"]), Path("masks", split, below).with_suffix(".png")),
        ):
            if f"{kind}_sha256" in entry:
                yield entry, kind, source, target


def _note(manifest: dict[str, Any]) -> str:
    tail = f"\n\n{manifest['message']}" if manifest.get("message") else ""
    if "files" in manifest:
        head = f"{manifest['name']}@v{manifest['version']}: {manifest['samples']} samples in "
        return head + f"{len(manifest['files'])} .npy files; {shapes_text(manifest)}" + tail
    counts = ", ".join(f"{k} {v}" for k, v in manifest["class_counts"].items())
    splits = ", ".join(f"{k} {v}" for k, v in manifest["splits"].items())
    head = f"{manifest['name']}@v{manifest['version']}: {len(manifest['images'])} images ({splits}); boxes: {counts}"
    return head + (f"\n\n{manifest['message']}" if manifest.get("message") else "")


# ---------------------------------------------------------------------------------------------- diff


@dataclass
class Diff:
    a: str
    b: str
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    relabelled: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # the image bytes changed under the same path
    moved: list[str] = field(default_factory=list)  # changed split
    class_delta: dict[str, int] = field(default_factory=dict)

    def lines(self, limit: int = 20) -> list[str]:
        out = [
            f"{self.a} -> {self.b}: {len(self.added)} added, {len(self.removed)} removed, "
            f"{len(self.relabelled)} relabelled, {len(self.changed)} image(s) changed, {len(self.moved)} moved split"
        ]
        delta = ", ".join(f"{k} {v:+d}" for k, v in self.class_delta.items() if v)
        if self.class_delta:  # an arrays version has no classes
            out.append(f"boxes: {delta or 'no change'}")
        for label, paths in (("+", self.added), ("-", self.removed), ("~", self.relabelled), ("!", self.changed)):
            out += [f"{label} {p}" for p in paths[:limit]]
            if len(paths) > limit:
                out.append(f"{label} ... and {len(paths) - limit} more")
        return out

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("a", "b", "added", "removed", "relabelled", "changed", "moved")} | {
            "class_delta": self.class_delta
        }


def diff(ref_a: str, ref_b: str, tracking_uri: str | None = None) -> Diff:
    a, b = get_version(ref_a, tracking_uri), get_version(ref_b, tracking_uri)
    if a.kind != b.kind:
        raise DatasetError(f"{a.ref} holds {a.kind} but {b.ref} holds {b.kind}; compare versions of one kind")
    old = {e["path"]: e for e in _entries(a.manifest)}
    new = {e["path"]: e for e in _entries(b.manifest)}
    result = Diff(a.ref, b.ref, added=sorted(new.keys() - old.keys()), removed=sorted(old.keys() - new.keys()))
    if a.kind == "arrays":
        result.changed = [
            p for p in sorted(old.keys() & new.keys()) if old[p]["array_sha256"] != new[p]["array_sha256"]
        ]
        return result
    for path in sorted(old.keys() & new.keys()):
        before, after = old[path], new[path]
        if before["image_sha256"] != after["image_sha256"]:
            result.changed.append(path)
        elif before["label_sha256"] != after["label_sha256"] or before.get("mask_sha256") != after.get("mask_sha256"):
            result.relabelled.append(path)
        if before["split"] != after["split"]:
            result.moved.append(path)
    names = list(dict.fromkeys([*a.manifest["names"], *b.manifest["names"]]))
    result.class_delta = {n: b.manifest["class_counts"].get(n, 0) - a.manifest["class_counts"].get(n, 0) for n in names}
    return result


# --------------------------------------------------------------------------------------- dataset: URIs


def resolve_dataset_uri(
    uri: str, tracking_uri: str | None = None, cache: Path | None = None, kind: str | None = "images"
) -> Path:
    """`dataset:NAME@vN` (or `@latest`) -> the data.yaml of a verified local copy, fetched once into the cache.
    `kind` is the kind of version the caller trains on (None: any); another kind is a DatasetError naming both."""
    from core.settings import read_env

    info = get_version(uri, tracking_uri)
    if kind is not None and info.kind != kind:
        raise DatasetError(f"{uri}: {info.ref} holds {info.kind} ({KINDS.get(info.kind, info.kind)}), but this "
                           f"needs {kind} ({KINDS.get(kind, kind)})")  # fmt: skip
    root = (cache or read_env(DatasetSettings).dataset_cache).expanduser() / info.name / f"v{info.version}"
    if not (root / ".complete").is_file() or json.loads((root / ".complete").read_text()) != info.digest:
        _materialize(info, root, tracking_uri)
    return root / "data.yaml"


def _materialize(info: VersionInfo, root: Path, tracking_uri: str | None) -> None:
    """Download the version's files into a temp folder beside `root`, check every sha256, then rename."""
    client = _client(tracking_uri)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".v{info.version}-", dir=root.parent))
    try:
        blobs = staging / ".blobs"
        verified: set[str] = set()
        files = list(_stored_files(info.manifest, staging))
        for run_id in sorted({entry[f"{kind}_run"] for entry, kind, _, _ in files}):
            client.download_artifacts(run_id, "objects", str(blobs / run_id))
        for entry, kind, _, below in files:
            sha = entry[f"{kind}_sha256"]
            blob = blobs / entry[f"{kind}_run"] / "objects" / sha[:2] / sha
            if sha not in verified:
                if not blob.is_file() or sha256_file(blob) != sha:
                    raise DatasetError(f"{info.ref}: {entry['path']} ({kind}) is missing or corrupt in the store")
                verified.add(sha)
            target = staging / below
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(blob, target)  # not a move: identical files (empty labels) share one blob
        shutil.rmtree(blobs)
        _write_yaml(info, staging, root)
        (staging / MANIFEST).write_text(json.dumps(info.manifest, indent=1))
        (staging / ".complete").write_text(json.dumps(info.digest))
        if root.exists():
            shutil.rmtree(root)
        os.replace(staging, root)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _write_yaml(info: VersionInfo, staging: Path, root: Path) -> None:
    import yaml

    data: dict[str, Any] = {"path": str(root.resolve())}
    block = {"version": info.ref, "digest": info.digest, "run_id": info.run_id}
    if info.kind != "images":  # no splits or names: the block alone names the version for log_dataset_version
        data["kiln_dataset"] = block | {"kind": info.kind}
        (staging / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
        return
    for split in SPLITS:
        if (staging / "images" / split).is_dir():
            data[split] = f"images/{split}"
    if "val" not in data:
        data["val"] = data["train"]  # ultralytics needs a val split; a one-split version validates on train
    data["names"] = dict(enumerate(info.manifest["names"]))
    data["kiln_dataset"] = block
    (staging / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def log_dataset_input(uri: str, tracking_uri: str | None = None, context: str = "training") -> VersionInfo:
    """Record `dataset:NAME@vN` on the active MLflow run (its Datasets panel) with the exact version and digest."""
    info = get_version(uri, tracking_uri)
    _log_input(info.ref, info.digest, info.run_id, _size(info.manifest), context)
    return info


def log_dataset_version(data_yaml: str | Path | None, context: str = "training") -> str | None:
    """When `data_yaml` is a fetched version's data.yaml (it carries `kiln_dataset`), record that exact version
    on the active run, as `log_dataset_input` does, without asking the store again; returns NAME@vN or None."""
    import yaml

    if data_yaml is None or not Path(data_yaml).is_file():
        return None
    try:
        loaded = yaml.safe_load(Path(data_yaml).read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return None
    block = loaded.get("kiln_dataset") if isinstance(loaded, dict) else None
    if not isinstance(block, dict):
        return None
    manifest = Path(data_yaml).parent / MANIFEST
    size = _size(json.loads(manifest.read_text())) if manifest.is_file() else ("images", 0)
    _log_input(str(block["version"]), str(block["digest"]), str(block["run_id"]), size, context)
    return str(block["version"])


def _size(manifest: dict[str, Any]) -> tuple[str, int]:
    """("images", count) or, for an arrays version, ("samples", count)."""
    return ("samples", int(manifest["samples"])) if "files" in manifest else ("images", len(manifest["images"]))


def _log_input(ref: str, digest: str, run_id: str, size: tuple[str, int], context: str) -> None:
    import mlflow
    from mlflow.data.meta_dataset import MetaDataset

    source = _dataset_source_class()(uri=f"dataset:{ref}", run_id=run_id)
    dataset = MetaDataset(source=source, name=ref, digest=digest[:32])  # type: ignore[abstract]
    tags = {vocab.DATASET: ref, vocab.DATASET_RUN_ID: run_id, size[0]: str(size[1])}
    mlflow.log_input(dataset, context=context, tags=tags)
    mlflow.set_tags({vocab.DATASET: ref, vocab.DATASET_RUN_ID: run_id})


@functools.cache
def _dataset_source_class() -> type:
    from mlflow.data.dataset_source import DatasetSource

    class _KilnDatasetSource(DatasetSource):
        """A dataset version frozen by `kiln data version`: `dataset:NAME@vN` and the run that holds it."""

        def __init__(self, uri: str, run_id: str) -> None:
            self.uri, self.run_id = uri, run_id

        @staticmethod
        def _get_source_type() -> str:
            return "kiln_dataset"

        def load(self) -> str:
            return str(resolve_dataset_uri(self.uri, kind=None))

        @staticmethod
        def _can_resolve(raw_source: Any) -> bool:
            return isinstance(raw_source, str) and raw_source.startswith("dataset:")

        @classmethod
        def _resolve(cls, raw_source: Any) -> DatasetSource:
            return cls(raw_source, get_version(raw_source).run_id)

        def to_dict(self) -> dict[str, Any]:
            return {"uri": self.uri, "run_id": self.run_id}

        @classmethod
        def from_dict(cls, source_dict: dict[Any, Any]) -> DatasetSource:
            return cls(source_dict["uri"], source_dict.get("run_id", ""))

    return _KilnDatasetSource


def __getattr__(attr: str) -> Any:
    # The source class subclasses MLflow's; built on first use so importing this module stays light.
    if attr == "KilnDatasetSource":
        return _dataset_source_class()
    raise AttributeError(attr)
