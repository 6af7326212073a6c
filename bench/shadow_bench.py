"""Shadow overhead: production's p50 latency at concurrency 1 with and without `--shadow challenger`.

    .venv/bin/python bench/shadow_bench.py                   # about 2 minutes on 2 cores
    .venv/bin/python bench/shadow_bench.py --rounds 5 --seconds 5 --models bench_xgb

Models (bench/benchmodels.py): the 30-feature XGBoost (a request costs well under a millisecond, so any work the
shadow adds to the request path shows) and the 7.8M UNet at 256x256 (~100 ms of CPU a request, so a shadow run
competing for the cores shows). Each gets a challenger version (another seed) under the alias `challenger`. Two
kiln servers run at once, one with `--shadow challenger --shadow-percent 100`, one without; a closed-loop
client (bench/loadgen.py) keeps one request in flight, the servers are measured in turn in each round, and the
overhead is the median over rounds of p50(shadow) / p50(plain) - 1. The shadowed server's /shadow route says
how many requests were compared and how many shadow runs were dropped (production was busy or the queue full).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchmodels as bm  # noqa: E402
from loadgen import ServerProcess, free_port, http_request, run_load  # noqa: E402
from serve_bench import drawing, png, tabular_row  # noqa: E402

VENV_BIN = Path(sys.executable).parent


def server(registry: bm.BenchRegistry, name: str, models: list[str], shadow: bool) -> ServerProcess:
    port = free_port()
    cmd = [str(VENV_BIN / "kiln"), "serve", "--models", ",".join(models), "--port", str(port), "--log-level", "warning"]
    if shadow:
        cmd += ["--shadow", "challenger", "--shadow-percent", "100"]
    env = {"MLFLOW_TRACKING_URI": registry.uri, "KILN_ACCESS_LOG": "0", "KILN_POLL_SECONDS": "30"}
    return ServerProcess(name, cmd, port, env, registry.folder)


def build(registry: bm.BenchRegistry, models: list[str]) -> dict[str, bytes]:
    """Register production (seed 0) and challenger (seed 1) versions; return one request per model."""
    bodies: dict[str, bytes] = {}
    if bm.TABULAR_MODEL in models:
        for seed, alias in ((0, "production"), (1, "challenger")):
            proto, rows, contract = bm.xgboost_model(seed)
            bm.register(bm.TABULAR_MODEL, proto, rows, contract, alias)
        record = json.dumps([dict(zip(bm.feature_names(), tabular_row(), strict=True))]).encode()
        bodies[bm.TABULAR_MODEL] = http_request(f"/v1/models/{bm.TABULAR_MODEL}/predict", record, "application/json")
    if bm.IMAGE_MODEL in models:
        for seed, alias in ((0, "production"), (1, "challenger")):
            path, example, contract = bm.unet(seed)
            bm.register(bm.IMAGE_MODEL, path, example, contract, alias)
        bodies[bm.IMAGE_MODEL] = http_request(f"/v1/models/{bm.IMAGE_MODEL}/predict", png(drawing()), "image/png")
    return bodies


def shadow_status(port: int, model: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/{model}/shadow", timeout=10) as response:
        body: dict[str, Any] = json.loads(response.read())
    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=f"{bm.TABULAR_MODEL},{bm.IMAGE_MODEL}", help="comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="measured window per point (the UNet: twice)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    models = [m for m in args.models.split(",") if m]
    registry = bm.create_registry(Path(tempfile.mkdtemp(prefix="kiln-shadow-bench-")))
    bodies = build(registry, models)
    servers = {"plain": server(registry, "plain", models, False), "shadow": server(registry, "shadow", models, True)}
    for s in servers.values():
        s.wait_ready()
    p50: dict[tuple[str, str], list[float]] = {}
    try:
        for rnd in range(args.rounds):
            for model in models:
                seconds = args.seconds * (2 if model == bm.IMAGE_MODEL else 1)
                for label in ("plain", "shadow") if rnd % 2 == 0 else ("shadow", "plain"):
                    result = run_load(servers[label].port, bodies[model], concurrency=1, seconds=seconds, warmup=1.0)
                    p50.setdefault((model, label), []).append(result.p50_ms)
                    print(f"round {rnd + 1} {model:<11} {label:<7} p50 {result.p50_ms:8.3f} ms  "
                          f"p99 {result.p99_ms:8.3f} ms  {result.throughput:8.1f}/s  failures {result.failures}",
                          flush=True)  # fmt: skip
        figures: dict[str, Any] = {}
        for model in models:
            ratios = [s / p for s, p in zip(p50[(model, "shadow")], p50[(model, "plain")], strict=True)]
            status = shadow_status(servers["shadow"].port, model)
            figures[model] = {
                "p50_plain_ms": float(np.median(p50[(model, "plain")])),
                "p50_shadow_ms": float(np.median(p50[(model, "shadow")])),
                "overhead": float(np.median(ratios)) - 1,
                "compared": status["requests_compared"], "dropped": status["dropped"],
                "agreement": status["agreement"], "latency_ms": status["latency_ms"],
            }  # fmt: skip
            f = figures[model]
            print(f"{model}: p50 {f['p50_plain_ms']:.3f} -> {f['p50_shadow_ms']:.3f} ms, overhead "
                  f"{100 * f['overhead']:+.1f}% (median of {len(ratios)} paired rounds); compared {f['compared']}, "
                  f"dropped {f['dropped']}, agreement {f['agreement']}")  # fmt: skip
    finally:
        for s in servers.values():
            s.stop()
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
