"""Live swap under load: the production alias moves 5 times while clients keep sending requests.

    .venv/bin/python bench/swap_bench.py                   # the 7.8M UNet, polling and webhook, ~3 minutes
    .venv/bin/python bench/swap_bench.py --model tabular --mode poll

For each move it reports the seconds from setting the alias to the first response computed by the new
version (each response names its version in X-Kiln-Model-Version), and over the whole run the failed
requests (non-2xx or broken connections), which must be 0. Before each move it waits until the answers all
come from the current version: requests queued on a swapped-out version still finish on it, and must not
be taken for answers of the next move's target.
- poll: kiln reads the registry (sqlite) every KILN_POLL_SECONDS (default 2 s);
- webhook: a real `mlflow server` (sqlite, --workers 1) sends its signed model_version_alias.created
  webhook to kiln, whose polling is turned off, so the webhook alone drives the swaps.
Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import bisect
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchmodels as bm  # noqa: E402
from loadgen import LoadResult, ServerProcess, free_port, http_request, run_load  # noqa: E402

VENV_BIN = Path(sys.executable).parent
SECRET = "swap-bench-secret"


@dataclass
class Observed:
    """(monotonic time, version) of every successful response, appended from the load thread."""

    responses: list[tuple[float, str]] = field(default_factory=list)

    def on_response(self, status: int, headers: dict[str, str], body: bytes, ended: float) -> None:
        if 200 <= status < 300:
            self.responses.append((ended, headers.get("x-kiln-model-version", "?")))

    def first_after(self, since: float, version: str) -> float | None:
        snapshot = self.responses[:]  # appended in completion order by the load thread
        start = bisect.bisect_left(snapshot, (since, ""))
        return next((ended for ended, seen in snapshot[start:] if seen == version), None)


def build_versions(model: str) -> tuple[str, bytes, list[str]]:
    """Register two versions of the model; returns its name, one request for it, and the versions."""
    if model == "image":
        import cv2

        versions = []
        for seed in (0, 1):
            path, example, contract = bm.unet(seed)
            versions.append(bm.register(bm.IMAGE_MODEL, path, example, contract, None))
        image = np.full((bm.IMAGE_SIZE, bm.IMAGE_SIZE), 255, np.uint8)
        cv2.circle(image, (128, 128), 60, 0, 3)
        body = bytes(cv2.imencode(".png", image)[1].tobytes())
        return bm.IMAGE_MODEL, http_request(f"/v1/models/{bm.IMAGE_MODEL}/predict", body, "image/png"), versions
    import json

    versions = []
    for seed in (0, 1):
        proto, rows, contract = bm.xgboost_model(seed)
        versions.append(bm.register(bm.TABULAR_MODEL, proto, rows, contract, None))
    record = dict(zip(bm.feature_names(), [0.1] * bm.N_FEATURES, strict=True))
    request = http_request(f"/v1/models/{bm.TABULAR_MODEL}/predict", json.dumps([record]).encode(), "application/json")
    return bm.TABULAR_MODEL, request, versions


def start_kiln(
    name: str, tracking_uri: str, registry: bm.BenchRegistry, env: dict[str, str], port: int
) -> ServerProcess:
    cmd = [str(VENV_BIN / "kiln"), "serve", "--models", name, "--port", str(port), "--log-level", "warning"]
    base = {"MLFLOW_TRACKING_URI": tracking_uri, "KILN_ACCESS_LOG": "0"}
    return ServerProcess(f"kiln-swap-{len(env)}", cmd, port, {**base, **env}, registry.folder)


def start_mlflow_server(registry: bm.BenchRegistry) -> ServerProcess:
    port = free_port()
    cmd = [str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", registry.uri, "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--workers", "1"]
    env = {
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",  # deliver to 127.0.0.1
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    server = ServerProcess("mlflow-server", cmd, port, env, registry.folder)
    server.wait_ready("/health")
    return server


def _wait_steady(observed: Observed, version: str, count: int, timeout: float) -> None:
    """Until the last `count` answers all came from `version`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        recent = observed.responses[-count:]
        if len(recent) == count and all(seen == version for _, seen in recent):
            return
        time.sleep(0.05)
    raise RuntimeError(f"answers from other versions kept coming {timeout:.0f}s after the swap to v{version}")


def move_and_time(
    client: object,
    name: str,
    versions: list[str],
    observed: Observed,
    moves: int,
    timeout: float,
    port: int,
    stragglers: int,
) -> list[tuple[str, str, float]]:
    timings = []
    current = versions[0]
    rng = np.random.default_rng(0)
    _wait_steady(observed, current, stragglers, timeout)
    for i in range(moves):
        target = versions[(i + 1) % len(versions)]
        time.sleep(rng.uniform(2.0, 4.0))  # steady load first; a random wait samples every phase of the poll timer
        moved_at = time.monotonic()
        client.set_registered_model_alias(name, "production", target)  # type: ignore[attr-defined]
        while (seen := observed.first_after(moved_at, target)) is None:
            if time.monotonic() - moved_at > timeout:
                raise RuntimeError(f"no response from v{target} within {timeout:.0f}s of the alias move")
            time.sleep(0.01)
        timings.append((current, target, seen - moved_at))
        # requests queued on the old version before the swap still finish on it; let them drain, or they
        # would count as "the new version" after the next move
        _wait_steady(observed, target, stragglers, timeout)
        steps = ", ".join(f"{k} {v:.2f}s" for k, v in _status(port, name)["load_seconds"].items())
        print(f"  move {i + 1}: v{current} -> v{target}: first response from v{target} after {seen - moved_at:.2f}s"
              f" (kiln's load steps: {steps})", flush=True)  # fmt: skip
        current = target
    return timings


def _status(port: int, name: str) -> dict[str, Any]:
    import json
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/{name}", timeout=30) as response:
        status: dict[str, Any] = json.loads(response.read())
    return status


def run_mode(
    mode: str, registry: bm.BenchRegistry, name: str, request: bytes, versions: list[str], args: argparse.Namespace
) -> tuple[list[tuple[str, str, float]], LoadResult]:
    from mlflow import MlflowClient

    mlflow_server = start_mlflow_server(registry) if mode == "webhook" else None
    try:
        tracking = f"http://127.0.0.1:{mlflow_server.port}" if mlflow_server else registry.uri
        client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
        port = free_port()
        env = {"KILN_POLL_SECONDS": str(args.poll_seconds)}
        if mlflow_server:
            env = {"KILN_POLL_SECONDS": "0", "KILN_WEBHOOK_SECRET": SECRET}
            # before any alias event: the server caches each event's webhook list (MLFLOW_WEBHOOK_CACHE_TTL, 60 s)
            url = f"http://127.0.0.1:{port}/v1/webhooks/mlflow"
            client.create_webhook(name="kiln", url=url, events=["model_version_alias.created"], secret=SECRET)
        client.set_registered_model_alias(name, "production", versions[0])
        with start_kiln(name, tracking, registry, env, port) as kiln:
            print(f"{mode}: kiln on port {kiln.port}, {args.concurrency} clients", flush=True)
            observed, halt, box = Observed(), threading.Event(), {}

            def load() -> None:
                box["result"] = run_load(
                    kiln.port, request, concurrency=args.concurrency, seconds=3600, warmup=0.0,
                    on_response=observed.on_response, halt=halt,
                )  # fmt: skip

            thread = threading.Thread(target=load)
            thread.start()
            try:
                timings = move_and_time(
                    client, name, versions, observed, args.moves, args.timeout, kiln.port, 2 * args.concurrency
                )
                time.sleep(1.0)
            finally:
                halt.set()
                thread.join()
    finally:
        if mlflow_server:
            mlflow_server.stop()
    return timings, box["result"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["image", "tabular"], default="image")
    parser.add_argument("--mode", choices=["poll", "webhook", "both"], default="both")
    parser.add_argument("--moves", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--poll-seconds", type=float, default=2.0, help="KILN_POLL_SECONDS in poll mode")
    parser.add_argument("--timeout", type=float, default=60.0, help="give up on a move after this long")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    registry = bm.create_registry(args.workdir or Path(tempfile.mkdtemp(prefix="kiln-swap-bench-")))
    print(f"registering two versions of the {args.model} model in {registry.folder} ...", flush=True)
    name, request, versions = build_versions(args.model)
    summary = []
    for mode in ("poll", "webhook") if args.mode == "both" else (args.mode,):
        timings, result = run_mode(mode, registry, name, request, versions, args)
        seconds = [t for _, _, t in timings]
        summary.append((mode, seconds, result))
    print("\nsummary:")
    for mode, seconds, result in summary:
        print(
            f"  {mode:<8} alias set -> first response from the new version: mean {np.mean(seconds):.2f}s, "
            f"max {np.max(seconds):.2f}s over {len(seconds)} moves; {len(result.latencies)} requests, "
            f"{result.failures} failed{'  (' + result.first_failure + ')' if result.failures else ''}, "
            f"p99 latency {result.p99_ms:.0f} ms"
        )
    if any(result.failures for _, _, result in summary):
        sys.exit(1)


if __name__ == "__main__":
    main()
