"""Team server figures: tiny trainings against sqlite vs the server, and kiln serve's swap time through it.

    .venv/bin/python bench/team_server_bench.py              # ~5 minutes on 2 cores
    .venv/bin/python bench/team_server_bench.py --repeats 1 --moves 2

Starts the stack of cloud/localstack.py (a throwaway PostgreSQL, moto as S3, `kiln server start`, 2 workers).
1. Wall time of `mlflow run -e skinmodel` (40-row CSV, 20 rounds) and `-e edgnet` (2 epochs, 8 drawings at 32 px),
   each against a fresh, already migrated sqlite store and against the server (artifacts through
   --serve-artifacts into S3), alternating, median of --repeats.
2. Two `kiln serve` processes on the server's registry: one polling (KILN_POLL_SECONDS=2, the default), one
   driven by MLflow's webhook (polling off). The alias moves between two versions; for each move the time from
   `set_registered_model_alias` returning to `GET /v1/models` naming the new version (checked every 20 ms).
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cloud.localstack import TrackingServer, free_port, stack  # noqa: E402

SECRET = "bench-webhook-secret"
WEBHOOK_ENV = {
    "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
    "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
    "MLFLOW_WEBHOOK_CACHE_TTL": "1",
}


def client_env(uri: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_S3_"))}
    bin_dir = str(Path(sys.executable).parent)
    env.update(
        MLFLOW_TRACKING_URI=uri, MLFLOW_DISABLE_TELEMETRY="true", PATH=f"{bin_dir}:{env['PATH']}", TQDM_DISABLE="1"
    )
    return {**env, **extra}


def tiny_csv(path: Path) -> Path:
    rng = np.random.default_rng(0)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["a", "b", "c", "label"])
        for _ in range(40):
            a, b, c = rng.normal(size=3)
            writer.writerow([f"{a:.4f}", f"{b:.4f}", f"{c:.4f}", int(a + 0.5 * b > 0)])
    return path


def timed_run(uri: str, folder: Path, entry: str, params: list[str]) -> float:
    argv = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", entry, "--env-manager", "local"]
    argv += [a for p in params for a in ("-P", p)]
    start = time.perf_counter()
    done = subprocess.run(argv, env=client_env(uri), cwd=folder, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{entry} against {uri}: {done.stderr[-2000:]}")
    return seconds


def training_overhead(server_uri: str, repeats: int, folder: Path) -> None:
    import mlflow

    data = tiny_csv(folder / "table.csv")
    jobs = {
        "skinmodel": [f"data={data}", "target=label", "n_estimators=20", "model_name=bench_skin"],
        "edgnet": ["epochs=2", "img_size=32", "num_samples=8", "batch_size=4", "model_name=bench_edgnet"],
    }
    print("| entry point | sqlite (s) | team server (s) | overhead |")
    print("|---|---|---|---|")
    for entry, params in jobs.items():
        local, remote = [], []
        for i in range(repeats):
            sqlite_dir = Path(tempfile.mkdtemp(dir=folder))
            sqlite_uri = f"sqlite:///{sqlite_dir / 'mlflow.db'}"
            mlflow.MlflowClient(sqlite_uri).search_experiments()  # migrated before timing, as the server's store is
            local.append(timed_run(sqlite_uri, sqlite_dir, entry, params))
            remote.append(timed_run(server_uri, folder, entry, params))
            print(f"  {entry} #{i + 1}: sqlite {local[-1]:.1f} s, server {remote[-1]:.1f} s", file=sys.stderr)
        a, b = statistics.median(local), statistics.median(remote)
        print(f"| {entry} | {a:.1f} | {b:.1f} | {b - a:+.1f} s ({100 * (b - a) / a:+.0f}%) |")


def served(port: int) -> str | None:
    try:
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).json()["models"]
    except (httpx.HTTPError, ValueError, KeyError):
        return None
    return str(models[0].get("version")) if models else None


def wait_version(port: int, version: str, timeout: float) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if served(port) == version:
            return time.perf_counter() - start
        time.sleep(0.02)
    raise TimeoutError(f"port {port} never served v{version}")


def swap_times(server_uri: str, moves: int, folder: Path) -> None:
    import mlflow

    client = mlflow.MlflowClient(server_uri)
    mlflow.set_tracking_uri(server_uri)
    first = client.get_model_version("bench_skin", "1")
    second = mlflow.register_model(first.source, "bench_skin")
    hook_port, poll_port = free_port(), free_port()
    client.create_webhook(
        name="bench",
        url=f"http://127.0.0.1:{hook_port}/v1/webhooks/mlflow",
        events=["model_version_alias.created"],
        secret=SECRET,
    )
    client.set_registered_model_alias("bench_skin", "production", "1")
    procs = []
    for port, extra in (
        (poll_port, {"KILN_POLL_SECONDS": "2"}),
        (hook_port, {"KILN_POLL_SECONDS": "0", "KILN_WEBHOOK_SECRET": SECRET}),
    ):
        argv = [sys.executable, "-m", "kiln", "serve", "--models", "bench_skin", "--port", str(port)]
        procs.append(
            subprocess.Popen(
                argv,
                env=client_env(server_uri, **extra),
                cwd=folder,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
    try:
        for port in (poll_port, hook_port):
            wait_version(port, "1", 180)
        times: dict[str, list[float]] = {"polling (2 s)": [], "webhook": []}
        versions = [str(second.version), "1"]
        for i in range(moves):
            target = versions[i % 2]
            client.set_registered_model_alias("bench_skin", "production", target)
            moved = time.perf_counter()
            for label, port in (("webhook", hook_port), ("polling (2 s)", poll_port)):
                wait_version(port, target, 60)
                times[label].append(time.perf_counter() - moved)
            time.sleep(1)
        print("\n| swap by | median (s) | min (s) | max (s) | moves |")
        print("|---|---|---|---|---|")
        for label, values in times.items():
            print(
                f"| {label} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} | {len(values)} |"
            )
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--moves", type=int, default=4)
    args = parser.parse_args()
    with stack() as s:
        server = TrackingServer(s.server_env(workers=2, **WEBHOOK_ENV), s.folder).start()
        try:
            print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
            training_overhead(server.uri, args.repeats, s.folder)
            swap_times(server.uri, args.moves, s.folder)
            print(f"\nload average after: {os.getloadavg()[0]:.1f}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
