"""Serving throughput: kiln vs raw in-process onnxruntime vs `mlflow models serve`, same ONNX models.

    .venv/bin/python bench/serve_bench.py                      # about 6 minutes on 2 cores
    .venv/bin/python bench/serve_bench.py --rounds 1 --concurrency 1,16 --skip-mlflow
    git archive COMMIT | tar -x -C /tmp/base && .venv/bin/python bench/serve_bench.py --baseline-tree /tmp/base

Models (bench/benchmodels.py): a 7.8M-parameter UNet at 256x256 (segmentation) and a 30-feature XGBoost
(tabular), registered in a throwaway sqlite registry. Every server is a separate process on 127.0.0.1 with
one worker: kiln, kiln with KILN_MAX_BATCH_SIZE=1, and `mlflow models serve --env-manager local` for each
model. A closed-loop client (bench/loadgen.py) holds 1, 4 and 16 requests in flight. Reported: requests/s,
p50 and p99 latency, failures; then the ratios the issue sets targets for:
- image via the task endpoint (a PNG in, a PNG mask out) >= 0.95x raw ORT, >= 4x mlflow models serve;
- tabular >= 3x mlflow models serve at concurrency 16;
- dynamic batching on vs off, for the XGBoost and for a wide MLP regressor (8.5M parameters, memory-bound
  at one row: where batching pays on a CPU). The UNet is not batched on CPU at all (its warm run takes
  ~100 ms a row, over KILN_MAX_BATCH_MS); the run prints each model's batching.
Raw ORT is the limit: the preprocessed tensor through session.run in a loop, no HTTP, no decoding, once with
ORT's default options and once with kiln's (same threads, spinning off), so the ratio to the second isolates
what the HTTP side costs. The CPU may be shared: all servers stay up, the measurements are interleaved in rounds
(raw ORT right before each kiln image point), and each ratio is the median of per-round ratios of
measurements taken seconds apart, so slow drifts of the machine's load cancel out.
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
from loadgen import ServerProcess, free_port, http_request, run_load, tree_cpu_seconds  # noqa: E402

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
    round: int
    cpu_ms: float  # CPU time the server (or raw ORT) spent per request, over the whole run


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


def measure_raw(
    onnx_path: Path, feeds: dict[str, np.ndarray], seconds: float, kiln_options: bool = False
) -> tuple[float, float]:
    """Sequential session.run calls per second and CPU ms per call, with ORT's default options or kiln's."""
    import onnxruntime as ort

    options = None
    if kiln_options:
        from serving.runtime.runtime import physical_cores, session_options

        options = session_options(physical_cores(), spinning=False)
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    for _ in range(2):
        session.run(None, feeds)
    runs, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        session.run(None, feeds)
        runs += 1
    return runs / (time.perf_counter() - start), 1000 * (time.process_time() - cpu) / runs


def measure(
    server: ServerProcess, request: bytes, c: int, args: argparse.Namespace, label: tuple[str, str, str], rnd: int
) -> Row:
    image = label[0] == "image"  # ~100 ms a request: a longer window and warm-up for 16 in flight
    seconds, warmup = (args.seconds * 2, args.warmup * 2) if image else (args.seconds, args.warmup)
    settle(server)
    cpu = tree_cpu_seconds(server.proc.pid)
    result = run_load(server.port, request, concurrency=c, seconds=seconds, warmup=warmup)
    cpu_ms = 1000 * (tree_cpu_seconds(server.proc.pid) - cpu) / max(result.completed, 1)
    row = Row(*label, c, result.throughput, result.p50_ms, result.p99_ms, result.failures, rnd, cpu_ms)
    note = f"  first failure: {result.first_failure}" if result.failures else ""
    print(f"  {label[0]:<8} {label[1]:<13} {label[2]:<20} c={c:<3} {row.per_second:9.1f}/s  p50 {row.p50_ms:8.2f} ms  "
          f"p99 {row.p99_ms:8.2f} ms  cpu {row.cpu_ms:7.2f} ms/req  failures {row.failures}{note}",
          flush=True)  # fmt: skip
    return row


def settle(server: ServerProcess, quiet_cpu_s: float = 0.02, step_s: float = 0.25, limit_s: float = 10.0) -> None:
    """Wait until the server has finished what the previous point left it (image requests still in flight, their
    off-path drift work): otherwise that CPU is charged to the next point's requests."""
    deadline = time.monotonic() + limit_s
    before = tree_cpu_seconds(server.proc.pid)
    while time.monotonic() < deadline:
        time.sleep(step_s)
        now = tree_cpu_seconds(server.proc.pid)
        if now - before < quiet_cpu_s:
            return
        before = now


def raw_row(measured: tuple[float, float], c: int, kind: str, endpoint: str, rnd: int) -> Row:
    per_second, cpu_ms = measured
    print(f"  {kind:<8} {'raw ORT':<13} {endpoint:<20} c={c:<3} {per_second:9.1f}/s  cpu {cpu_ms:7.2f} ms/run",
          flush=True)  # fmt: skip
    return Row(kind, "raw ORT", endpoint, c, per_second, float("nan"), float("nan"), 0, rnd, cpu_ms)


def kiln_server(registry: bm.BenchRegistry, name: str, env: dict[str, str]) -> ServerProcess:
    port = free_port()
    models = f"{bm.IMAGE_MODEL},{bm.TABULAR_MODEL},{bm.MLP_MODEL}"
    cmd = [str(VENV_BIN / "kiln"), "serve", "--models", models, "--port", str(port)]
    base = {"MLFLOW_TRACKING_URI": registry.uri, "KILN_ACCESS_LOG": "0", "KILN_POLL_SECONDS": "30"}
    return ServerProcess(name, [*cmd, "--log-level", "warning"], port, {**base, **env}, registry.folder)


def mlflow_server(registry: bm.BenchRegistry, model: str) -> ServerProcess:
    port = free_port()
    cmd = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", f"models:/{model}@production", "--env-manager", "local"]
    cmd += ["-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    # its scoring server execs `uvicorn` by name: the venv's bin must be on PATH
    env = {"MLFLOW_TRACKING_URI": registry.uri, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return ServerProcess(f"mlflow-{model}", cmd, port, env, registry.folder)


def start_servers(registry: bm.BenchRegistry, args: argparse.Namespace) -> dict[str, ServerProcess]:
    """Every server up at once (idle ones cost nothing), so measurements can be interleaved."""
    servers = {
        "kiln": kiln_server(registry, "kiln", {}),
        "kiln-nobatch": kiln_server(registry, "kiln-nobatch", {"KILN_MAX_BATCH_SIZE": "1"}),
    }
    if args.baseline_tree:  # the same server from another checkout (git archive COMMIT | tar -x -C DIR)
        servers["kiln-base"] = kiln_server(registry, "kiln-base", {"PYTHONPATH": str(args.baseline_tree.resolve())})
    if not args.skip_mlflow:
        servers["mlflow-image"] = mlflow_server(registry, bm.IMAGE_MODEL)
        servers["mlflow-tabular"] = mlflow_server(registry, bm.TABULAR_MODEL)
    for server in servers.values():
        server.wait_ready()
    return servers


def image_points(servers: dict[str, ServerProcess], bodies: dict[str, bytes], raw_in: dict[str, Any],
                 args: argparse.Namespace, rnd: int) -> list[Row]:  # fmt: skip
    """Raw ORT right before each kiln point, so each ratio compares measurements a few seconds apart."""
    rows = []
    for c in args.concurrency:
        path, feeds = raw_in["image_path"], raw_in["image_feeds"]
        rows.append(raw_row(measure_raw(path, feeds, args.seconds), c, "image", "default options", rnd))
        rows.append(raw_row(measure_raw(path, feeds, args.seconds, True), c, "image", "kiln's options", rnd))
        kiln = servers["kiln"]
        rows.append(measure(kiln, bodies["image_task"], c, args, ("image", "kiln", "task PNG"), rnd))
        rows.append(measure(kiln, bodies["image_v2"], c, args, ("image", "kiln", "V2 binary tensor"), rnd))
        if "mlflow-image" in servers:
            label = ("image", "mlflow", "invocations JSON")
            rows.append(measure(servers["mlflow-image"], bodies["image_mlflow"], c, args, label, rnd))
    return rows


def tabular_points(servers: dict[str, ServerProcess], bodies: dict[str, bytes], args: argparse.Namespace,
                   rnd: int) -> list[Row]:  # fmt: skip
    plan = [
        ("kiln", "tab_task", ("tabular", "kiln", "task records")),
        ("kiln", "tab_invocations", ("tabular", "kiln", "invocations inputs")),
        ("kiln", "tab_v2", ("tabular", "kiln", "V2 JSON tensor")),
        ("kiln-base", "tab_task", ("tabular", "kiln-base", "task records")),
        ("kiln-base", "tab_invocations", ("tabular", "kiln-base", "invocations inputs")),
        ("kiln-base", "tab_v2", ("tabular", "kiln-base", "V2 JSON tensor")),
        ("kiln-nobatch", "tab_task", ("tabular", "kiln-nobatch", "task records")),
        ("mlflow-tabular", "tab_mlflow", ("tabular", "mlflow", "invocations inputs")),
        ("kiln", "mlp_task", ("mlp", "kiln", "task records")),
        ("kiln-nobatch", "mlp_task", ("mlp", "kiln-nobatch", "task records")),
    ]
    rows = []
    for c in args.concurrency:
        for server, body, label in plan:
            if server in servers:
                rows.append(measure(servers[server], bodies[body], c, args, label, rnd))
    return rows


def _status(port: int, model: str) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/{model}", timeout=10) as response:
        status: dict[str, Any] = json.loads(response.read())
    return status


def requests_for(tensor: np.ndarray, image: np.ndarray) -> dict[str, bytes]:
    names, row = bm.feature_names(), tabular_row()
    tensor_row = json.dumps({"inputs": [row]}).encode()
    pick_tabular = {"X-Kiln-Model": bm.TABULAR_MODEL}
    record = json.dumps([dict(zip(names, row, strict=True))]).encode()
    v2, v2_headers = v2_binary(bm.IMAGE_MODEL, tensor)
    v2_row = {"inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP32", "data": row}]}
    return {
        "image_task": http_request(f"/v1/models/{bm.IMAGE_MODEL}/predict", png(image), "image/png"),
        "image_v2": http_request(f"/v2/models/{bm.IMAGE_MODEL}/infer", v2, "application/octet-stream", v2_headers),
        "image_mlflow": http_request(
            "/invocations", json.dumps({"inputs": tensor.tolist()}).encode(), "application/json"
        ),
        "tab_task": http_request(f"/v1/models/{bm.TABULAR_MODEL}/predict", record, "application/json"),
        "mlp_task": http_request(f"/v1/models/{bm.MLP_MODEL}/predict", record, "application/json"),
        "tab_invocations": http_request("/invocations", tensor_row, "application/json", pick_tabular),
        "tab_v2": http_request(f"/v2/models/{bm.TABULAR_MODEL}/infer", json.dumps(v2_row).encode(), "application/json"),
        # mlflow's ONNX flavor cannot answer dataframe_split here: it flattens the [N, 2] probabilities output
        # into a DataFrame column and pandas refuses the length; its tensor format works
        "tab_mlflow": http_request("/invocations", tensor_row, "application/json"),
    }  # fmt: skip


# --- report -----------------------------------------------------------------------------------------------


def median_of(rows: list[Row], key: tuple[str, str, str], c: int, field: str) -> float:
    values = [getattr(r, field) for r in rows if (r.model, r.server, r.endpoint, r.concurrency) == (*key, c)]
    return float(np.median(values)) if values else float("nan")


def paired_ratio(rows: list[Row], top: tuple[str, str, str], bottom: tuple[str, str, str], c: int, cpu: bool) -> float:
    """The median over rounds of top/bottom measured in the same round (a few seconds apart). With `cpu`, the
    ratio of CPU per request, bottom over top: how many times less CPU the top spends on the same request."""
    ratios = []
    for rnd in sorted({r.round for r in rows}):
        a = [r for r in rows if (r.model, r.server, r.endpoint, r.concurrency, r.round) == (*top, c, rnd)]
        b = [r for r in rows if (r.model, r.server, r.endpoint, r.concurrency, r.round) == (*bottom, c, rnd)]
        bottom_value = b[0].cpu_ms if b and cpu else b[0].per_second if b else 0.0
        if a and b and bottom_value > 0 and a[0].cpu_ms > 0:  # no request finished in a window: no ratio
            ratios.append(b[0].cpu_ms / a[0].cpu_ms if cpu else a[0].per_second / b[0].per_second)
    return float(np.median(ratios)) if ratios else float("nan")


PAIRS = {
    "image task PNG / raw ORT": (("image", "kiln", "task PNG"), ("image", "raw ORT", "default options")),
    "image task PNG / raw ORT, kiln's options": (("image", "kiln", "task PNG"), ("image", "raw ORT", "kiln's options")),
    "image V2 binary / raw ORT": (("image", "kiln", "V2 binary tensor"), ("image", "raw ORT", "default options")),
    "image task PNG / mlflow": (("image", "kiln", "task PNG"), ("image", "mlflow", "invocations JSON")),
    "tabular task / mlflow": (("tabular", "kiln", "task records"), ("tabular", "mlflow", "invocations inputs")),
    "tabular invocations / mlflow": (
        ("tabular", "kiln", "invocations inputs"),
        ("tabular", "mlflow", "invocations inputs"),
    ),
    "tabular V2 / mlflow": (("tabular", "kiln", "V2 JSON tensor"), ("tabular", "mlflow", "invocations inputs")),
    "tabular task / invocations": (("tabular", "kiln", "task records"), ("tabular", "kiln", "invocations inputs")),
    "tabular task / V2": (("tabular", "kiln", "task records"), ("tabular", "kiln", "V2 JSON tensor")),
    "tabular task, this tree / baseline": (
        ("tabular", "kiln", "task records"),
        ("tabular", "kiln-base", "task records"),
    ),
    "tabular invocations, this tree / baseline": (
        ("tabular", "kiln", "invocations inputs"),
        ("tabular", "kiln-base", "invocations inputs"),
    ),
    "tabular V2, this tree / baseline": (
        ("tabular", "kiln", "V2 JSON tensor"),
        ("tabular", "kiln-base", "V2 JSON tensor"),
    ),
    "baseline tabular task / mlflow": (
        ("tabular", "kiln-base", "task records"),
        ("tabular", "mlflow", "invocations inputs"),
    ),
    "tabular batching on / off": (("tabular", "kiln", "task records"), ("tabular", "kiln-nobatch", "task records")),
    "mlp batching on / off": (("mlp", "kiln", "task records"), ("mlp", "kiln-nobatch", "task records")),
}


def report(rows: list[Row], args: argparse.Namespace) -> dict[str, float]:
    keys = sorted({(r.model, r.server, r.endpoint) for r in rows})
    header = " ".join(f"{'c=' + str(c):>9}" for c in args.concurrency)
    for field, title in (("per_second", "requests (images or rows) per second"), ("cpu_ms", "CPU ms per request")):
        print(f"\nmedians over {args.rounds} round(s), {title}:")
        print(f"  {'model':<8} {'server':<13} {'endpoint':<20} {header}")
        for key in keys:
            values = " ".join(f"{median_of(rows, key, c, field):9.2f}" for c in args.concurrency)
            print(f"  {key[0]:<8} {key[1]:<13} {key[2]:<20} {values}")
    ratios: dict[str, float] = {}
    for cpu, title in ((False, "throughput ratios"), (True, "CPU-per-request ratios (robust to a shared CPU)")):
        print(f"\n{title}, each the median of per-round ratios of measurements taken seconds apart:")
        for name, (top, bottom) in PAIRS.items():
            per_c = {c: paired_ratio(rows, top, bottom, c, cpu) for c in args.concurrency}
            ratios.update({f"{'cpu: ' if cpu else ''}{name} c={c}": v for c, v in per_c.items()})
            print(f"  {name:<41} " + " ".join(f"c={c}: {v:5.2f}x" for c, v in per_c.items()))
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured window per point (image: twice)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured load before each window (image: twice)")
    parser.add_argument("--concurrency", default="1,4,16", help="requests in flight, comma-separated")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions; medians are reported")
    parser.add_argument("--skip-mlflow", action="store_true", help="leave out mlflow models serve")
    parser.add_argument("--workdir", type=Path, default=None, help="registry folder (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    parser.add_argument(
        "--baseline-tree",
        type=Path,
        default=None,
        help="a checkout of another commit: its kiln serve is measured beside this one's (tabular)",
    )
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    started = time.time()
    registry = bm.create_registry(args.workdir or Path(tempfile.mkdtemp(prefix="kiln-serve-bench-")))
    print(f"building models in {registry.folder} ...", flush=True)
    onnx_path, example, contract = bm.unet()
    bm.register(bm.IMAGE_MODEL, onnx_path, example, contract, "production")
    proto, rows_example, contract = bm.xgboost_model()
    bm.register(bm.TABULAR_MODEL, proto, rows_example, contract, "production")
    mlp_path, rows_example, contract = bm.mlp_model()
    bm.register(bm.MLP_MODEL, mlp_path, rows_example, contract, "production")
    tab_path = registry.folder / "xgb.onnx"
    tab_path.write_bytes(proto.SerializeToString())  # type: ignore[attr-defined]

    image = drawing()
    tensor = image_tensor(image)
    raw_in = {"image_path": onnx_path, "image_feeds": {"input": tensor}}
    bodies = requests_for(tensor, image)
    row = np.asarray([tabular_row()], dtype=np.float32)
    raw_tab = {
        "runs/s of 1 row": measure_raw(tab_path, {"input": row}, args.seconds)[0],
        "rows/s in runs of 1024": 1024 * measure_raw(tab_path, {"input": np.repeat(row, 1024, 0)}, args.seconds)[0],
    }
    print("raw onnxruntime tabular: " + ", ".join(f"{v:.0f} {k}" for k, v in raw_tab.items()), flush=True)
    servers = start_servers(registry, args)
    rows: list[Row] = []
    try:
        for model in (bm.IMAGE_MODEL, bm.TABULAR_MODEL, bm.MLP_MODEL):
            print(f"kiln {model} batching: {_status(servers['kiln'].port, model)['batching']}", flush=True)
        for rnd in range(args.rounds):
            print(f"round {rnd + 1} of {args.rounds}", flush=True)
            rows += image_points(servers, bodies, raw_in, args, rnd)
            rows += tabular_points(servers, bodies, args, rnd)
    finally:
        for server in servers.values():
            server.stop()
    ratios = report(rows, args)
    print(f"\ntotal {time.time() - started:.0f}s; cores: {os.cpu_count()}")
    if args.json:
        payload = {"raw_ort_tabular": raw_tab, "rows": [asdict(r) for r in rows], "ratios": ratios}
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
