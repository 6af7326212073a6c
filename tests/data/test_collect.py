"""`kiln data collect` against an S3-compatible endpoint started here (moto's server mode stands in for MinIO).

.venv/bin/python -m pytest tests/data/test_collect.py -q
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from click.testing import CliRunner

from data.cli import data
from data.collect import CollectError, collect, read_manifest

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto(extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """`python -m moto.server` on a free port; returns the process and its URL once it answers."""
    port = free_port()
    env = os.environ | CREDENTIALS | (extra_env or {})
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    stop(proc)
    raise RuntimeError("moto server did not start within 60 s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    proc, url = start_moto()
    try:
        yield url
    finally:
        stop(proc)


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def s3(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint)


def png(seed: int, size: int = 24) -> bytes:
    image = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".png", image)
    assert ok
    return bytes(data.tobytes())


def fill_bucket(endpoint: str, bucket: str, n: int) -> Any:
    client = s3(endpoint)
    client.create_bucket(Bucket=bucket)
    for i in range(n):
        client.put_object(Bucket=bucket, Key=f"cam/day1/img{i:03d}.png", Body=png(i))
    client.put_object(Bucket=bucket, Key="cam/notes.txt", Body=b"not an image")
    client.put_object(Bucket=bucket, Key="cam/clip.mp4", Body=b"\0" * 10)
    client.put_object(Bucket=bucket, Key="other/img.png", Body=png(99))  # outside the prefix
    return client


def test_collect_fetches_images_then_only_what_changed(endpoint: str, tmp_path: Path) -> None:
    client = fill_bucket(endpoint, "first", 6)
    dst = tmp_path / "dst"
    result = collect("s3://first/cam/", dst, endpoint_url=endpoint, workers=3)
    assert sorted(result.fetched) == [f"cam/day1/img{i:03d}.png" for i in range(6)]
    assert sorted(result.skipped) == ["cam/clip.mp4", "cam/notes.txt"]
    assert (dst / "images/day1/img003.png").read_bytes() == png(3)
    assert not list(dst.rglob("*.part"))
    manifest = read_manifest(dst)
    assert manifest["cam/day1/img000.png"]["size"] == len(png(0))
    assert manifest["cam/day1/img000.png"]["etag"]  # the ETag S3 reported

    client.put_object(Bucket="first", Key="cam/day1/img002.png", Body=png(202))  # changed
    client.put_object(Bucket="first", Key="cam/day2/new.jpg", Body=png(7))  # new
    again = collect("s3://first/cam", dst, endpoint_url=endpoint)
    assert sorted(again.fetched) == ["cam/day1/img002.png", "cam/day2/new.jpg"]
    assert again.changed == ["cam/day1/img002.png"]
    assert again.unchanged == 5
    assert (dst / "images/day1/img002.png").read_bytes() == png(202)
    assert "skipped 5 already collected" in again.summary()


def test_collect_resumes_without_refetching_finished_files(endpoint: str, tmp_path: Path) -> None:
    """An interrupted run left half the manifest and a torn `.part`: the next run fetches only the rest."""
    fill_bucket(endpoint, "resume", 8)
    dst = tmp_path / "dst"
    collect("s3://resume/cam/", dst, endpoint_url=endpoint)
    manifest_path = dst / ".kiln/collect.jsonl"
    lines = manifest_path.read_text().splitlines()
    kept = lines[:3]
    manifest_path.write_text("\n".join(kept) + '\n{"key": "cam/day1/img0')  # torn last line, as after a kill
    finished = {json.loads(line)["key"] for line in kept}
    stamps = {k: (dst / "images" / k.removeprefix("cam/")).stat().st_mtime_ns for k in finished}
    (dst / "images/day1/img007.png.part").write_bytes(b"half")
    result = collect("s3://resume/cam/", dst, endpoint_url=endpoint)
    assert set(result.fetched) == {f"cam/day1/img{i:03d}.png" for i in range(8)} - finished
    assert result.unchanged == 3
    for key, stamp in stamps.items():  # finished files were not written again
        assert (dst / "images" / key.removeprefix("cam/")).stat().st_mtime_ns == stamp
    assert not (dst / "images/day1/img007.png.part").exists()
    assert len(read_manifest(dst)) == 8


def test_collect_from_a_local_folder_and_the_cli(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a/x.png").write_bytes(png(1))
    (src / "b.JPG").write_bytes(png(2))
    (src / "readme.md").write_text("hi")
    dst = tmp_path / "dst"
    out = CliRunner().invoke(data, ["collect", str(src), str(dst), "--quiet"])
    assert out.exit_code == 0, out.output
    assert "fetched 2 image(s)" in out.output and "1 non-image key(s) skipped" in out.output
    assert (dst / "images/a/x.png").is_file() and (dst / "images/b.JPG").is_file()
    out = CliRunner().invoke(data, ["collect", str(src), str(dst)])
    assert "fetched 0 image(s)" in out.output and "skipped 2 already collected" in out.output
    assert "skipped (not an image): readme.md" in out.output


def test_missing_bucket_and_unreachable_endpoint_are_named(endpoint: str, tmp_path: Path) -> None:
    with pytest.raises(CollectError, match="bucket 'nope' does not exist at http://127.0.0.1"):
        collect("s3://nope/x", tmp_path / "d", endpoint_url=endpoint)
    dead = f"http://127.0.0.1:{free_port()}"
    out = CliRunner().invoke(data, ["collect", "s3://b/p", str(tmp_path / "d"), "--endpoint-url", dead])
    assert out.exit_code == 1
    assert f"Error: cannot reach the S3 endpoint {dead}" in out.output
    assert "Traceback" not in out.output
    out = CliRunner().invoke(data, ["collect", str(tmp_path / "no-such-folder"), str(tmp_path / "d")])
    assert out.exit_code == 1 and "source folder" in out.output and "does not exist" in out.output


def test_wrong_credentials_are_named(tmp_path: Path) -> None:
    """moto checks signatures only when told to (INITIAL_NO_AUTH_ACTION_COUNT=0): then an unknown key fails."""
    proc, url = start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    try:
        with pytest.raises(CollectError, match=r"refused the credentials for s3://locked \(InvalidAccessKeyId"):
            collect("s3://locked/p", tmp_path / "d", endpoint_url=url)
    finally:
        stop(proc)


def test_endpoint_from_the_environment(endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fill_bucket(endpoint, "envbucket", 2)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    result = collect("s3://envbucket/cam/", tmp_path / "dst")
    assert len(result.fetched) == 2
