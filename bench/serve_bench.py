"""Serving throughput: kiln vs raw in-process onnxruntime vs `mlflow models serve`, same ONNX models.

    .venv/bin/python bench/serve_bench.py                      # about 5 minutes on 2 cores
    .venv/bin/python bench/serve_bench.py --seconds 3 --concurrency 1,16 --skip-mlflow

Models (bench/benchmodels.py): a 7.8M-parameter UNet at 256x256 (segmentation) and a 30-feature XGBoost
(tabular), registered in a throwaway sqlite registry. Every server is a separate process on 127.0.0.1, with
one worker, loaded by a closed-loop client (bench/loadgen.py) at 1, 4 and 16 requests in flight. Reported:
requests/s, p50 and p99 latency, failures; then the ratios the issue sets targets for, all from this run:
- image via the task endpoint (a PNG in, a PNG mask out) >= 0.95x raw ORT, >= 4x mlflow models serve;
- tabular >= 3x mlflow models serve at concurrency 16;
- dynamic batching on vs off (KILN_MAX_BATCH_SIZE=1) where it matters.
Raw ORT is the limit: the preprocessed tensor through session.run in a loop, no HTTP, no decoding.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchmodels as bm  # noqa: E402
from loadgen import ServerProcess, free_port, http_request, run_load  # noqa: E402

VENV_BIN = Path(sys.executable).parent


@dataclass
class Row:
    model: str
    server: str
    endpoint: str
    concurrency: int
    per_second: float
    p50_ms: float
    p99_ms: float
    failures: int


# --- payloads ---------------------------------------------------------------------------------------------


def drawing(size: int = bm.IMAGE_SIZE, seed: int = 0) -> np.ndarray:
    """A gray line drawing, the kind of image EDGNet segments."""
    import cv2

    rng = np.random.default_rng(seed)
    image = np.full((size, size), 255, np.uint8)
    for _ in range(25):
        p1, p2 = rng.integers(0, size, 2), rng.integers(0, size, 2)
        cv2.line(image, tuple(int(v) for v in p1), tuple(int(v) for v in p2), 0, int(rng.integers(1, 4)))
    for _ in range(6):
        cv2.circle(image, tuple(int(v) for v in rng.integers(0, size, 2)), int(rng.integers(5, 40)), 0, 2)
    return image


def image_tensor(image: np.ndarray) -> np.ndarray:
    """What the server's preprocessing makes of the drawing (EDGNet: x/255, mean 0.5, std 0.5)."""
    from projects.edgnet import data as edgdata

    return ((image.astype(np.float32) / 255 - edgdata.MEAN) / edgdata.STD)[None, None]


def png(image: np.ndarray) -> bytes:
    import cv2

    return bytes(cv2.imencode(".png", image)[1].tobytes())


def v2_binary(name: str, tensor: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """A tritonclient-style request: JSON header, then the raw float32 tensor."""
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": list(tensor.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": tensor.nbytes},
                }
            ],
            "outputs": [{"name": "output", "parameters": {"binary_data": True}}],
        }
    ).encode()
    return header + tensor.tobytes(), {"Inference-Header-Content-Length": str(len(header))}


def tabular_row(seed: int = 1) -> list[float]:
    return [round(float(v), 4) for v in np.random.default_rng(seed).normal(size=bm.N_FEATURES)]


# --- measurements -----------------------------------------------------------------------------------------


def measure_raw(onnx_path: Path, feeds: dict[str, np.ndarray], seconds: float) -> float:
    """Sequential session.run calls per second with onnxruntime's default options."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    for _ in range(3):
        session.run(None, feeds)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(None, feeds)
        runs += 1
    return runs / (time.perf_counter() - start)


def load(port: int, request: bytes, args: argparse.Namespace, label: tuple[str, str, str]) -> list[Row]:
    rows = []
    for c in args.concurrency:
        result = run_load(port, request, concurrency=c, seconds=args.seconds, warmup=args.warmup)
        row = Row(*label, c, result.throughput, result.p50_ms, result.p99_ms, result.failures)
        rows.append(row)
        note = f"  first failure: {result.first_failure}" if result.failures else ""
        print(f"  {label[1]:<14} {label[2]:<22} c={c:<3} {row.per_second:9.1f}/s  p50 {row.p50_ms:8.2f} ms  "
              f"p99 {row.p99_ms:8.2f} ms  failures {row.failures}{note}", flush=True)  # fmt: skip
    return rows


def kiln_server(registry: bm.BenchRegistry, name: str, env: dict[str, str]) -> ServerProcess:
    port = free_port()
    cmd = [str(VENV_BIN / "kiln"), "serve", "--models", f"{bm.IMAGE_MODEL},{bm.TABULAR_MODEL}", "--port", str(port)]
    base = {"MLFLOW_TRACKING_URI": registry.uri, "KILN_ACCESS_LOG": "0", "KILN_POLL_SECONDS": "30"}
    return ServerProcess(name, [*cmd, "--log-level", "warning"], port, {**base, **env}, registry.folder)


def mlflow_server(registry: bm.BenchRegistry, model: str) -> ServerProcess:
    port = free_port()
    cmd = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", f"models:/{model}@production", "--env-manager", "local"]
    cmd += ["-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    # its scoring server execs `uvicorn` by name: the venv's bin must be on PATH
    env = {"MLFLOW_TRACKING_URI": registry.uri, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return ServerProcess(f"mlflow-{model}", cmd, port, env, registry.folder)


def bench_kiln(registry: bm.BenchRegistry, bodies: dict[str, bytes], args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    for label, env in (("kiln", {}), ("kiln-nobatch", {"KILN_MAX_BATCH_SIZE": "1"})):
        with kiln_server(registry, label, env) as server:
            print(f"{label} on port {server.port}", flush=True)
            rows += load(server.port, bodies["image_task"], args, ("image", label, "task PNG"))
            rows += load(server.port, bodies["tab_task"], args, ("tabular", label, "task records"))
            if label == "kiln":
                rows += load(server.port, bodies["image_v2"], args, ("image", label, "V2 binary tensor"))
                rows += load(server.port, bodies["tab_invocations"], args, ("tabular", label, "invocations inputs"))
    return rows


def bench_mlflow(registry: bm.BenchRegistry, bodies: dict[str, bytes], args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    for model, body, kind, endpoint in (
        (bm.IMAGE_MODEL, bodies["image_mlflow"], "image", "invocations JSON"),
        (bm.TABULAR_MODEL, bodies["tab_mlflow"], "tabular", "invocations inputs"),
    ):
        with mlflow_server(registry, model) as server:
            print(f"mlflow models serve {model} on port {server.port}", flush=True)
            rows += load(server.port, body, args, (kind, "mlflow", endpoint))
    return rows


def requests_for(tensor: np.ndarray, image: np.ndarray) -> dict[str, bytes]:
    names, row = bm.feature_names(), tabular_row()
    tensor_row = json.dumps({"inputs": [row]}).encode()
    pick_tabular = {"X-Kiln-Model": bm.TABULAR_MODEL}
    v2, v2_headers = v2_binary(bm.IMAGE_MODEL, tensor)
    return {
        "image_task": http_request(f"/v1/models/{bm.IMAGE_MODEL}/predict", png(image), "image/png"),
        "image_v2": http_request(f"/v2/models/{bm.IMAGE_MODEL}/infer", v2, "application/octet-stream", v2_headers),
        "image_mlflow": http_request(
            "/invocations", json.dumps({"inputs": tensor.tolist()}).encode(), "application/json"
        ),
        "tab_task": http_request(
            f"/v1/models/{bm.TABULAR_MODEL}/predict",
            json.dumps([dict(zip(names, row, strict=True))]).encode(),
            "application/json",
        ),
        "tab_invocations": http_request("/invocations", tensor_row, "application/json", pick_tabular),
        # mlflow's ONNX flavor cannot answer dataframe_split here: it flattens the [N, 2] probabilities output
        # into a DataFrame column and pandas refuses the length; its tensor format works
        "tab_mlflow": http_request("/invocations", tensor_row, "application/json"),
    }  # fmt: skip


# --- report -----------------------------------------------------------------------------------------------


def best(rows: list[Row], model: str, server: str, endpoint: str, c: int) -> float:
    key = (model, server, endpoint, c)
    found = [r.per_second for r in rows if (r.model, r.server, r.endpoint, r.concurrency) == key]
    return found[0] if found else float("nan")


def report(rows: list[Row], raw: dict[str, float], args: argparse.Namespace) -> dict[str, Any]:
    ratios: dict[str, float] = {}
    print("\nratios (same run):")
    for c in args.concurrency:
        task = best(rows, "image", "kiln", "task PNG", c)
        ratios[f"image_task_vs_raw_ort_c{c}"] = task / raw["image_per_s"]
        ratios[f"image_task_vs_mlflow_c{c}"] = task / best(rows, "image", "mlflow", "invocations JSON", c)
        tab = best(rows, "tabular", "kiln", "task records", c)
        mlflow_tab = best(rows, "tabular", "mlflow", "invocations inputs", c)
        ratios[f"tabular_task_vs_mlflow_c{c}"] = tab / mlflow_tab
        ratios[f"tabular_invocations_vs_mlflow_c{c}"] = (
            best(rows, "tabular", "kiln", "invocations inputs", c) / mlflow_tab
        )
        for kind, endpoint in (("image", "task PNG"), ("tabular", "task records")):
            off = best(rows, kind, "kiln-nobatch", endpoint, c)
            ratios[f"{kind}_batching_on_vs_off_c{c}"] = best(rows, kind, "kiln", endpoint, c) / off
    for key, value in ratios.items():
        print(f"  {key:<38} {value:6.2f}x")
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured window per point")
    parser.add_argument("--warmup", type=float, default=1.5, help="unmeasured load before each window")
    parser.add_argument("--concurrency", default="1,4,16", help="requests in flight, comma-separated")
    parser.add_argument("--skip-mlflow", action="store_true", help="leave out mlflow models serve")
    parser.add_argument("--workdir", type=Path, default=None, help="registry folder (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    started = time.time()
    registry = bm.create_registry(args.workdir or Path(tempfile.mkdtemp(prefix="kiln-serve-bench-")))
    print(f"building models in {registry.folder} ...", flush=True)
    onnx_path, example, meta = bm.unet()
    bm.register(bm.IMAGE_MODEL, onnx_path, example, meta, "production")
    proto, rows_example, meta = bm.xgboost_model()
    bm.register(bm.TABULAR_MODEL, proto, rows_example, meta, "production")
    tab_path = registry.folder / "xgb.onnx"
    tab_path.write_bytes(proto.SerializeToString())  # type: ignore[attr-defined]

    image = drawing()
    tensor = image_tensor(image)
    row = np.asarray([tabular_row()], dtype=np.float32)
    raw = {
        "image_per_s": measure_raw(onnx_path, {"input": tensor}, args.seconds),
        "tabular_runs_per_s_batch1": measure_raw(tab_path, {"input": row}, args.seconds),
        "tabular_rows_per_s_batch1024": 1024 * measure_raw(tab_path, {"input": np.repeat(row, 1024, 0)}, args.seconds),
    }  # fmt: skip
    for key, value in raw.items():
        print(f"raw onnxruntime {key}: {value:.1f}", flush=True)

    bodies = requests_for(tensor, image)
    rows = bench_kiln(registry, bodies, args)
    if not args.skip_mlflow:
        rows += bench_mlflow(registry, bodies, args)
    ratios = report(rows, raw, args)
    print(f"\ntotal {time.time() - started:.0f}s; cores: {os.cpu_count()}")
    if args.json:
        payload = {"raw_ort": raw, "rows": [asdict(r) for r in rows], "ratios": ratios}
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
