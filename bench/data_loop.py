"""Data-loop throughput: collect 1,000 small images from a local S3 endpoint, filter them, and auto-label them
through serving's Predictor against raw onnxruntime on the same YOLOv8n ONNX.

    .venv/bin/python bench/data_loop.py                  # 1000 images, autolabel on 300 at 320 px
    .venv/bin/python bench/data_loop.py --images 200 --autolabel-images 100

- collect: moto's server mode (`python -m moto.server`, standing in for MinIO) holds N JPEGs of 160x120
  (~8 KB); `kiln data collect` fetches them with 8 parallel downloads. A second run (nothing new) is timed too.
- filter: `kiln data filter` on the collected folder (2 decoding threads).
- autolabel: a YOLOv8n built from `yolov8n.yaml` (random init: nothing is downloaded), exported to ONNX at
  320x320 as training exports it and registered in a throwaway sqlite registry. `kiln data autolabel` (decode,
  the Predictor's letterbox and NMS, pre-label files, review queue) against a loop of decode + the same
  letterbox + `session.run` on the same ONNX with the same session options and batch size: the raw floor.
Prints one line per figure and the load average, so a busy machine shows in the numbers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "data"))
sys.path.insert(0, str(REPO / "bench"))

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TQDM_DISABLE", "1")
for key, value in {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}.items():
    os.environ.setdefault(key, value)

IMGSZ = 320
NAMES = ("person", "package")
BATCH = 8


def scene(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    coarse = cv2.resize(rng.integers(40, 215, (5, 5, 3), dtype=np.uint8), (160, 120), interpolation=cv2.INTER_CUBIC)
    image = np.clip(coarse + rng.normal(0, 14, (120, 160, 3)), 0, 255).astype(np.uint8)
    return bytes(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())


def upload(endpoint: str, n: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import boto3

    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket="bench")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: client.put_object(Bucket="bench", Key=f"cams/{i:05d}.jpg", Body=scene(i)), range(n)))


def bench_collect(endpoint: str, dst: Path, n: int) -> None:
    from data.collect import collect

    first = collect("s3://bench/cams/", dst, endpoint_url=endpoint, workers=8)
    again = collect("s3://bench/cams/", dst, endpoint_url=endpoint, workers=8)
    assert len(first.fetched) == n and again.unchanged == n
    print(f"collect: {n} images ({first.bytes / n / 1e3:.1f} KB each) in {first.seconds:.2f} s = "
          f"{n / first.seconds:.0f} images/s; second run (nothing new) {again.seconds:.2f} s")  # fmt: skip


def bench_filter(dst: Path, n: int) -> None:
    from data.filter import filter_images

    result = filter_images(dst)
    print(f"filter: {len(result.rows)} images in {result.seconds:.2f} s = {len(result.rows) / result.seconds:.0f} "
          f"images/s; verdicts {result.counts()}")  # fmt: skip


def yolo_onnx(folder: Path) -> tuple[str, Path]:
    """Register a random-init YOLOv8n (2 classes) exported at IMGSZ; returns the registry URI and the ONNX file."""
    import torch
    from benchmodels import create_registry, register

    from core.contract import DetectionPost, ModelContract
    from projects.common.onnx_export import export_onnx
    from projects.yolo.data import model_input
    from projects.yolo.model import DetectionModel, export_module  # ultralytics only after kiln's offline setup

    torch.manual_seed(0)
    model = export_module(DetectionModel("yolov8n.yaml", nc=len(NAMES), verbose=False).eval())
    example = torch.rand(1, 3, IMGSZ, IMGSZ)
    path = export_onnx(model, example, folder / "yolo.onnx", dynamic_hw=False, input_name="images",
                       output_name="output0")  # fmt: skip
    contract = ModelContract(task="detection", family="yolo", preprocess=model_input(IMGSZ),
                             postprocess=DetectionPost(names=NAMES))  # fmt: skip
    registry = create_registry(folder)
    register("bench_yolo", path, example.numpy(), contract, "production")
    return registry.uri, path


def raw_ort(onnx_path: Path, files: list[Path]) -> float:
    """Decode, letterbox (core.preprocess), session.run in batches of BATCH: images/s with kiln's session options."""
    from core.contract import ModelContract
    from core.preprocess import letterbox
    from projects.yolo.data import model_input
    from serving.runtime import runtime

    pre = model_input(IMGSZ)
    contract = ModelContract(task="detection", family="yolo", preprocess=pre)
    session = runtime.open_session(onnx_path, runtime.session_options(runtime.default_threads(contract)))
    name = session.get_inputs()[0].name
    start = time.perf_counter()
    for i in range(0, len(files), BATCH):
        batch = []
        for path in files[i : i + BATCH]:
            image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_COLOR)
            boxed = letterbox(image, pre)[0]
            batch.append(cv2.cvtColor(boxed, cv2.COLOR_BGR2RGB).transpose(2, 0, 1).astype(np.float32) / 255)
        session.run(None, {name: np.stack(batch)})
    return len(files) / (time.perf_counter() - start)


def bench_autolabel(dst: Path, work: Path, n: int) -> None:
    from data.autolabel import autolabel

    label_dir = work / "autolabel"
    (label_dir / "images").mkdir(parents=True)
    files = sorted((dst / "images").rglob("*.jpg"))[:n]
    for path in files:
        shutil.copyfile(path, label_dir / "images" / path.name)
    uri, onnx_path = yolo_onnx(work / "registry")
    images = sorted((label_dir / "images").iterdir())
    raw_before = raw_ort(onnx_path, images)
    result = autolabel(label_dir, "bench_yolo@production", tracking_uri=uri, batch=BATCH)
    raw_after = raw_ort(onnx_path, images)  # before and after: a busy machine moves both
    rate, raw = result.labelled / result.seconds, (raw_before + raw_after) / 2
    print(f"autolabel: {result.labelled} images at {IMGSZ} px in {result.seconds:.2f} s = {rate:.1f} images/s "
          f"({sum(result.boxes.values())} boxes); raw onnxruntime on the same ONNX: {raw_before:.1f} images/s "
          f"before, {raw_after:.1f} after -> autolabel runs at {rate / raw:.2f}x raw")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--autolabel-images", type=int, default=300)
    args = parser.parse_args()
    from test_collect import free_port

    work = Path(tempfile.mkdtemp(prefix="kiln-data-bench-"))
    port = free_port()
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait(endpoint)
        upload(endpoint, args.images)
        print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
        dst = work / "collected"
        bench_collect(endpoint, dst, args.images)
        bench_filter(dst, args.images)
        bench_autolabel(dst, work, args.autolabel_images)
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    finally:
        moto.terminate()
        moto.wait()
        shutil.rmtree(work, ignore_errors=True)


def _wait(endpoint: str) -> None:
    import httpx

    for _ in range(300):
        try:
            httpx.get(endpoint, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"moto server at {endpoint} did not start")


if __name__ == "__main__":
    main()
