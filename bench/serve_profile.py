"""CPU per request of each protocol, in one process: the task endpoint, `/invocations` and KServe V2 on the
XGBoost of bench/benchmodels.py (30 features, one row), called as ASGI apps straight into `create_app` (no
uvicorn: its HTTP parsing costs every protocol the same), 16 requests in flight.

    .venv/bin/python bench/serve_profile.py time                 # paired CPU rounds, medians of the ratios
    .venv/bin/python bench/serve_profile.py profile --protocols task   # cProfile, the top functions
    valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes \\
        .venv/bin/python bench/serve_profile.py callgrind         # instruction counts, one dump per protocol
    git archive COMMIT | tar -x -C /tmp/base && .venv/bin/python bench/serve_profile.py time --tree /tmp/base

`time` interleaves the protocols in rounds and prints each one's CPU per request (the event loop's thread, and
the whole process, off-path drift thread included: each protocol's count runs --settle seconds past its last
answer, so that its queued drift work is its own and not the next protocol's) and the median of the per-round
ratios, so a shared CPU's drift cancels out. `callgrind` switches counting on after the warm-up and dumps once
per protocol; count the event loop's thread (the files ending in -01) with `callgrind_annotate` or the
`summary:` line, divided by --requests. The registry is built once in --workdir.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchmodels as bm  # noqa: E402
from starlette.types import ASGIApp as Asgi  # noqa: E402
from starlette.types import Message  # noqa: E402


def bodies() -> dict[str, tuple[str, bytes, list[tuple[bytes, bytes]]]]:
    """Each protocol's request for the same row, as serve_bench.py sends it: path, body, extra headers."""
    names = bm.feature_names()
    row = [round(float(v), 4) for v in np.random.default_rng(1).normal(size=bm.N_FEATURES)]
    v2 = {"inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP32", "data": row}]}
    record = json.dumps([dict(zip(names, row, strict=True))]).encode()
    pick = [(b"x-kiln-model", bm.TABULAR_MODEL.encode())]
    return {
        "task": (f"/v1/models/{bm.TABULAR_MODEL}/predict", record, []),
        "invocations": ("/invocations", json.dumps({"inputs": [row]}).encode(), pick),
        "v2": (f"/v2/models/{bm.TABULAR_MODEL}/infer", json.dumps(v2).encode(), []),
    }


BODIES = bodies()


async def call(app: Asgi, protocol: str) -> bytes:
    """One request through the whole ASGI stack (middleware included); a non-200 answer stops the run."""
    path, body, extra = BODIES[protocol]
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers + extra,
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8080), "state": {}}  # fmt: skip
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:  # the request is whole: wait for a disconnect that never comes
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    messages: list[Message] = []

    async def send(message: Message) -> None:
        messages.append(message)

    await app(scope, receive, send)
    answer = b"".join(m.get("body", b"") for m in messages[1:])
    if messages[0]["status"] != 200:
        raise RuntimeError(f"{protocol}: HTTP {messages[0]['status']}: {answer[:300]!r}")
    return answer


async def load(app: Asgi, protocol: str, requests: int, concurrency: int = 16) -> None:
    async def client() -> None:
        for _ in range(requests // concurrency):
            await call(app, protocol)

    await asyncio.gather(*(client() for _ in range(concurrency)))


async def paired_rounds(app: Asgi, protocols: list[str], args: argparse.Namespace) -> None:
    """CPU ms per request, per round: (event-loop thread, whole process)."""
    cpu: dict[str, list[tuple[float, float]]] = {p: [] for p in protocols}
    for _ in range(args.rounds):
        for protocol in protocols:
            thread, process = time.thread_time(), time.process_time()
            await load(app, protocol, args.requests)
            await asyncio.sleep(args.settle)  # the off-path worker drains this protocol's drift work into its count
            n = args.requests
            cpu[protocol].append((1000 * (time.thread_time() - thread) / n, 1000 * (time.process_time() - process) / n))
    for protocol, rows in cpu.items():
        print(f"{protocol:12s} CPU ms/request, median: event loop {statistics.median(r[0] for r in rows):.4f}, "
              f"process {statistics.median(r[1] for r in rows):.4f}")  # fmt: skip
    for top, bottom in (("task", "invocations"), ("task", "v2"), ("v2", "invocations")):
        if top in cpu and bottom in cpu:
            loop = statistics.median(a[0] / b[0] for a, b in zip(cpu[top], cpu[bottom], strict=True))
            whole = statistics.median(a[1] / b[1] for a, b in zip(cpu[top], cpu[bottom], strict=True))
            print(f"{top} / {bottom} CPU per request, median of paired rounds: event loop {loop:.3f}x, "
                  f"process {whole:.3f}x")  # fmt: skip
    print(f"load average {os.getloadavg()[0]:.2f} (other work on the machine shows here)")


async def profile(app: Asgi, protocols: list[str], args: argparse.Namespace) -> None:
    for protocol in protocols:
        profiler = cProfile.Profile()
        profiler.enable()
        await load(app, protocol, args.requests)
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(40)
        print(f"===== {protocol}, {args.requests} requests\n{out.getvalue()}")


def callgrind_control(*command: str) -> None:
    """Ask valgrind to act on this process; keep running (sleeping) until it has, so the command is seen."""
    control = subprocess.Popen(["callgrind_control", *command, str(os.getpid())], stdout=subprocess.DEVNULL)
    while control.poll() is None:
        time.sleep(0.005)


async def callgrind(app: Asgi, protocols: list[str], args: argparse.Namespace) -> None:
    callgrind_control("-i", "on")
    for _ in range(args.rounds):
        for protocol in protocols:
            callgrind_control("-z")
            await load(app, protocol, args.requests)
            callgrind_control(f"--dump={protocol}")
    callgrind_control("-i", "off")


MODES = {"time": paired_rounds, "profile": profile, "callgrind": callgrind}


def registry(folder: Path) -> str:
    """The sqlite registry with the XGBoost model, built the first time only."""
    db = folder / "mlflow.db"
    built = db.exists()
    uri = bm.create_registry(folder).uri
    if not built:
        proto, rows, contract = bm.xgboost_model()
        bm.register(bm.TABULAR_MODEL, proto, rows, contract, "production")
    return uri


async def run(args: argparse.Namespace) -> None:
    import serving
    from serving.edge.app import create_app
    from serving.settings import ServeSettings

    print(f"serving from {Path(serving.__file__).parent.parent}", flush=True)
    app = create_app(ServeSettings.from_env(None, models=[bm.TABULAR_MODEL]))
    protocols = args.protocols.split(",")
    async with app.router.lifespan_context(app):
        for protocol in BODIES:  # warm every path (first drift score, imports) before anything is counted
            print(f"{protocol}: {(await call(app, protocol))[:120]!r}", flush=True)
            await load(app, protocol, 800)
        await MODES[args.mode](app, protocols, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=sorted(MODES))
    parser.add_argument("--protocols", default="task,invocations,v2", help="comma-separated: task, invocations, v2")
    parser.add_argument("--requests", type=int, default=1600, help="requests per protocol and round")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (callgrind: 1 is enough)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/kiln-serve-profile"), help="registry folder")
    parser.add_argument("--settle", type=float, default=0.3, help="seconds after each protocol's requests")
    parser.add_argument("--tree", type=Path, default=None, help="serve from another checkout (a baseline)")
    args = parser.parse_args()
    unknown = set(args.protocols.split(",")) - set(BODIES)
    if unknown:
        parser.error(f"unknown protocols {sorted(unknown)}; known: {sorted(BODIES)}")
    os.environ.update(MLFLOW_DISABLE_TELEMETRY="true", KILN_ACCESS_LOG="0", KILN_POLL_SECONDS="30")
    os.environ["MLFLOW_TRACKING_URI"] = registry(args.workdir)
    if args.tree is not None:  # the registry was built with this checkout; the server comes from the other one
        for name in [m for m in sys.modules if m.split(".")[0] in ("core", "serving", "projects")]:
            del sys.modules[name]
        sys.path.insert(0, str(args.tree.resolve()))
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
