"""`kiln data collect SRC DST`: copy the images of an S3 prefix (AWS, MinIO, any S3-compatible store) or a local
folder into DST/images/, incrementally, in parallel, resumable.

    kiln data collect s3://cameras/door-1/ data/door --endpoint-url http://minio:9000
    python -c "from data.collect import collect; print(collect('s3://b/p', 'out').summary())"

DST/.kiln/collect.jsonl is the manifest: one line per finished object (key, size, ETag, local path), appended
the moment its file is complete. A second run fetches only objects whose key is new or whose size or ETag
changed, and says how many it skipped; after an interruption the finished files are in the manifest and are
not fetched again, and a half-written `*.part` file is simply fetched again. Keys that are not images are
listed and skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from core.errors import UserError
from data.yolo_layout import IMG_SUFFIXES

STATE_DIR = ".kiln"  # tool state inside a data-loop folder; never part of a dataset version
MANIFEST = "collect.jsonl"
MAX_LISTED = 20  # skipped keys printed before "... and N more"
CHUNK = 1 << 20


class CollectError(UserError):
    """The source cannot be listed or read: endpoint, bucket, credentials, folder."""


@dataclass(frozen=True)
class SourceObject:
    """One object of the source: its key (relative to the prefix), size and ETag (or size-mtime locally)."""

    key: str
    rel: str  # the key below the prefix: where it lands under DST/images/
    size: int
    etag: str


@dataclass
class CollectResult:
    dst: Path
    fetched: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # fetched again because size or ETag differed
    unchanged: int = 0
    skipped: list[str] = field(default_factory=list)  # not images, or unsafe names
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    bytes: int = 0

    def summary(self) -> str:
        rate = len(self.fetched) / self.seconds if self.seconds > 0 else 0.0
        parts = [
            f"fetched {len(self.fetched)} image(s) ({self.bytes / 1e6:.1f} MB, {rate:.0f}/s)",
            f"{len(self.changed)} of them changed since the last run" if self.changed else "",
            f"skipped {self.unchanged} already collected",
            f"{len(self.skipped)} non-image key(s) skipped" if self.skipped else "",
            f"{len(self.failed)} failed" if self.failed else "",
        ]
        return "; ".join(p for p in parts if p) + f" -> {self.dst / 'images'}"


# --------------------------------------------------------------------------------------------------- sources


class LocalSource:
    """A folder: keys are relative paths, the 'ETag' is size and modification time."""

    def __init__(self, folder: Path) -> None:
        if not folder.is_dir():
            raise CollectError(f"source folder {folder} does not exist")
        self.folder = folder
        self.label = str(folder)

    def list(self) -> Iterator[SourceObject]:
        for path in sorted(self.folder.rglob("*")):
            if path.is_file():
                stat = path.stat()
                rel = path.relative_to(self.folder).as_posix()
                yield SourceObject(rel, rel, stat.st_size, f"{stat.st_size}-{stat.st_mtime_ns}")

    def fetch(self, obj: SourceObject, target: Path) -> int:
        shutil.copyfile(self.folder / obj.key, target)
        return obj.size


class S3Source:
    """`s3://bucket/prefix` through boto3; `endpoint_url` (or AWS_ENDPOINT_URL) for MinIO and friends."""

    def __init__(self, uri: str, endpoint_url: str | None = None) -> None:
        import boto3
        from botocore.config import Config

        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not bucket:
            raise CollectError(f"{uri!r} names no bucket; use s3://bucket/prefix")
        self.bucket, self.prefix = bucket, prefix
        self.endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"
        config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=60)
        config = config.merge(Config(max_pool_connections=32))
        self.client = boto3.client("s3", endpoint_url=endpoint_url or None, config=config)
        self.label = f"s3://{bucket}/{prefix} at {self.endpoint}"

    def list(self) -> Iterator[SourceObject]:
        paginator = self.client.get_paginator("list_objects_v2")
        with s3_errors(self.bucket, self.endpoint):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for item in page.get("Contents", []):
                    key = item["Key"]
                    if key.endswith("/"):
                        continue  # a "folder" marker object
                    rel = key[len(self.prefix) :].lstrip("/") if self.prefix else key
                    yield SourceObject(key, rel, int(item["Size"]), str(item.get("ETag", "")).strip('"'))

    def fetch(self, obj: SourceObject, target: Path) -> int:
        with s3_errors(self.bucket, self.endpoint, obj.key):
            body = self.client.get_object(Bucket=self.bucket, Key=obj.key)["Body"]
            written = 0
            with target.open("wb") as out:
                for chunk in iter(lambda: body.read(CHUNK), b""):
                    out.write(chunk)
                    written += len(chunk)
        return written


class s3_errors:  # noqa: N801 - used as a context manager, reads as a phrase
    """Turn botocore's errors into one line naming the endpoint, bucket and key."""

    def __init__(self, bucket: str, endpoint: str, key: str | None = None) -> None:
        self.bucket, self.endpoint, self.key = bucket, endpoint, key

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            return
        from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

        where = f"s3://{self.bucket}" + (f"/{self.key}" if self.key else "")
        if isinstance(exc, EndpointConnectionError):
            raise CollectError(f"cannot reach the S3 endpoint {self.endpoint}: {exc}") from None
        if isinstance(exc, NoCredentialsError):
            raise CollectError(
                f"no AWS credentials for {where}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile)"
            ) from None
        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            message = exc.response.get("Error", {}).get("Message", "")
            if code == "NoSuchBucket":
                raise CollectError(f"bucket {self.bucket!r} does not exist at {self.endpoint}") from None
            if code in CREDENTIAL_CODES:
                raise CollectError(
                    f"{self.endpoint} refused the credentials for {where} ({code}: {message}); "
                    "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
                ) from None
            if code in ("NoSuchKey", "404"):
                raise CollectError(f"{where} disappeared while collecting (deleted after listing)") from None
            raise CollectError(f"{where} at {self.endpoint}: {code}: {message}") from None


CREDENTIAL_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken", "403"}
)


def open_source(src: str, endpoint_url: str | None = None) -> LocalSource | S3Source:
    if src.startswith("s3://"):
        return S3Source(src, endpoint_url)
    if "://" in src:
        raise CollectError(f"source {src!r}: only s3://bucket/prefix and local folders are supported")
    return LocalSource(Path(src).expanduser())


# -------------------------------------------------------------------------------------------------- manifest


def state_dir(dst: Path) -> Path:
    return dst / STATE_DIR


def read_manifest(dst: Path) -> dict[str, dict[str, Any]]:
    """key -> the last manifest line for it. A torn last line (killed mid-write) is ignored."""
    path = state_dir(dst) / MANIFEST
    entries: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return entries
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and "key" in entry:
            entries[entry["key"]] = entry
    return entries


def open_log(path: Path) -> Any:
    """An append-only JSON-lines file; a torn last line (killed mid-write) is ended first, so the next entry
    starts on a line of its own."""
    if path.is_file() and path.stat().st_size:
        with path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
        if torn:
            with path.open("a", encoding="utf-8") as f:
                f.write("\n")
    return path.open("a", encoding="utf-8")


def safe_rel(rel: str) -> str | None:
    """The key as a relative path under images/, or None when it would escape the folder."""
    parts = PurePosixPath(rel).parts
    if not parts or rel.startswith("/") or any(p in ("..", ".", "") for p in parts) or "\\" in rel:
        return None
    return PurePosixPath(*parts).as_posix()


def plan(objects: Iterable[SourceObject], manifest: dict[str, dict[str, Any]], result: CollectResult) -> list[Any]:
    """The objects to fetch: image keys that are new, or whose size or ETag changed."""
    todo: list[tuple[SourceObject, str]] = []
    for obj in objects:
        rel = safe_rel(obj.rel)
        if rel is None or Path(rel).suffix.lower() not in IMG_SUFFIXES:
            result.skipped.append(obj.key)
            continue
        seen = manifest.get(obj.key)
        if seen and seen.get("size") == obj.size and seen.get("etag") == obj.etag:
            result.unchanged += 1
            continue
        if seen:
            result.changed.append(obj.key)
        todo.append((obj, rel))
    return todo


# -------------------------------------------------------------------------------------------------- collect


def collect(
    src: str,
    dst: str | Path,
    *,
    endpoint_url: str | None = None,
    workers: int = 8,
    progress: bool = False,
    on_skipped: Callable[[str], None] | None = None,
) -> CollectResult:
    """Fetch every new or changed image of `src` into `dst`/images and record it in the manifest."""
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    dst = Path(dst).expanduser()
    source = open_source(src, endpoint_url)
    result = CollectResult(dst=dst)
    start = time.perf_counter()
    todo = plan(source.list(), read_manifest(dst), result)
    for key in result.skipped:
        if on_skipped:
            on_skipped(key)
    (dst / "images").mkdir(parents=True, exist_ok=True)
    state_dir(dst).mkdir(parents=True, exist_ok=True)
    with open_log(state_dir(dst) / MANIFEST) as manifest:
        _fetch_all(source, todo, dst, manifest, result, workers, progress)
    result.seconds = time.perf_counter() - start
    if result.failed:
        first = next(iter(result.failed.items()))
        raise CollectError(
            f"{len(result.failed)} object(s) failed (first: {first[0]}: {first[1]}); "
            f"{len(result.fetched)} fetched and recorded, run again to retry the rest"
        )
    return result


def _fetch_all(
    source: LocalSource | S3Source,
    todo: list[tuple[SourceObject, str]],
    dst: Path,
    manifest: Any,
    result: CollectResult,
    workers: int,
    progress: bool,
) -> None:
    from tqdm import tqdm

    bar = tqdm(total=len(todo), unit="img", desc="collect", disable=not progress or not todo)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: dict[Future[int], tuple[SourceObject, str]] = {}
        items = iter(todo)
        try:
            _keep_busy(pool, pending, items, source, dst, workers * 4)
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    obj, rel = pending.pop(future)
                    _record(future, obj, rel, manifest, result)
                    bar.update(1)
                _keep_busy(pool, pending, items, source, dst, workers * 4)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
        finally:
            bar.close()


def _keep_busy(
    pool: ThreadPoolExecutor,
    pending: dict[Future[int], tuple[SourceObject, str]],
    items: Iterator[tuple[SourceObject, str]],
    source: LocalSource | S3Source,
    dst: Path,
    depth: int,
) -> None:
    """Keep at most `depth` downloads queued, so an interrupt leaves little half-done work."""
    while len(pending) < depth:
        item = next(items, None)
        if item is None:
            return
        pending[pool.submit(_fetch_one, source, item[0], dst / "images" / item[1])] = item


def _fetch_one(source: LocalSource | S3Source, obj: SourceObject, target: Path) -> int:
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    written = source.fetch(obj, part)
    if written != obj.size:
        part.unlink(missing_ok=True)
        raise CollectError(f"{obj.key}: got {written} bytes, the listing said {obj.size}")
    os.replace(part, target)  # atomic: a file under images/ is always complete
    return written


def _record(future: Future[int], obj: SourceObject, rel: str, manifest: Any, result: CollectResult) -> None:
    try:
        written = future.result()
    except CollectError as exc:
        if "cannot reach" in exc.message or "refused the credentials" in exc.message:
            raise
        result.failed[obj.key] = exc.message
        return
    except OSError as exc:
        result.failed[obj.key] = str(exc)
        return
    entry = {**asdict(obj), "path": f"images/{rel}", "fetched_at": round(time.time(), 3)}
    manifest.write(json.dumps(entry) + "\n")
    manifest.flush()  # the entry is on disk before the next file counts as done
    result.fetched.append(obj.key)
    result.bytes += written
