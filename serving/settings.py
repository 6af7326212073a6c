"""The server's settings: one typed object read from the environment, with every default declared here.

    KILN_API_TOKEN=secret KILN_POLL_SECONDS=5 kiln serve --models edgnet

`kiln serve` flags override the environment (`--models`, `--alias`); everything else comes from `KILN_*`
variables, read through `core.settings.read_env` as every kiln service reads its own. A bad value fails at
start-up with a `SettingsError` naming the variable and the value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.errors import SettingsError
from core.settings import env_name as core_env_name
from core.settings import read_env, to_env

MiB = 1024 * 1024


@dataclass(frozen=True)
class ServeSettings:
    models: tuple[str, ...] = ()  # registered models to serve; empty = every model that has `alias`
    alias: str = "production"  # registry alias each model is served from, and watched
    poll_seconds: float = 2.0  # how often each alias is re-read from the registry; 0 turns polling off
    api_token: str | None = None  # bearer token for every route but health, metrics and docs; unset = open
    metrics_open: bool = False  # /metrics without the token; it names every served model and version
    webhook_secret: str | None = None  # HMAC secret of the MLflow webhook; unset = the receiver answers 403
    webhook_tolerance_seconds: float = 300.0  # a webhook timestamp further than this from now is a replay
    swap_retry_seconds: float = 300.0  # a version that failed its checks is not tried again for this long
    max_body_bytes: int = 32 * MiB  # larger bodies get 413 before they are read
    body_timeout_seconds: float = 30.0  # a body not fully received this long after the request began gets 408
    max_header_bytes: int = 64 * 1024  # request line + headers; more gets 431 (nginx's default is 32 KiB)
    max_headers: int = 100  # header fields per request; more gets 431 (Apache's LimitRequestFields)
    header_timeout_seconds: float = 10.0  # a request head not complete this long after it began gets 408 and a close
    max_connections: int = 1024  # open connections per server process; more are answered 503 and closed at once
    max_connections_per_client: int = 64  # open connections per client address (nginx's limit_conn); more: 503
    max_decoded_pixels: int = 0  # pixels an image upload may decode to; 0 = per model: 64 x its H x W, >= 2048^2
    decode_budget_pixels: int = 96 * 1024 * 1024  # decoded pixels in flight in the whole process; more wait or 503
    max_request_pixels: int = 0  # batch x H x W a request may ask of an image model; 0 = 4 batches at its own size
    max_batch_size: int = 16  # rows one session run may take; 1 turns dynamic batching off
    max_batch_ms: float = 50.0  # and no more rows than the warm-up says run in this long (see store.batch_config)
    max_queue_delay_ms: float = 0.0  # wait this long for more requests to fill a batch (Triton's knob)
    instances: int = 1  # session runs in flight at once per model (Triton's instance count)
    inline_run_ms: float = 1.0  # batches expected to run faster than this run on the event loop, not a thread
    intra_op_threads: int = 0  # ORT threads per run; 0 = all physical cores for image models, 1 for tabular
    ort_spinning: bool = False  # let ORT worker threads spin between runs; they then burn CPU the HTTP side needs
    access_log: bool = True  # one JSON line per request on the `kiln.serving.access` logger
    cache_dir: str | None = None  # where versions are downloaded before loading; unset = a temporary dir
    # the server's state folder: with it, the workers share canary answers, shadow comparisons and drift windows
    # (serving/rollout/ledger.py); `kiln serve --workers N` makes one when unset; unset with 1 worker = in memory
    state_dir: str | None = None
    shadow: str | None = None  # alias of the challenger each model also runs on, after answering; unset = no shadow
    shadow_percent: float = 100.0  # share of task requests the challenger also answers
    shadow_budget: float = 0.03  # share of wall time shadow runs may take; beyond it requests are not shadowed
    canary: bool = True  # follow the canary the registry holds for each model (kiln promote --canary)
    routing_header: str = "X-Kiln-Routing-Key"  # requests with the same value go to the same side of a canary
    drift_window: int = 2000  # live values kept per feature for the drift scores
    drift_min_samples: int = 100  # a feature is scored once it has this many live values
    drift_percent: float = 100.0  # share of task requests whose features are observed
    drift_budget: float = 0.02  # share of wall time drift statistics may take; beyond it requests are not observed
    capture: str | None = None  # folder or s3://bucket/prefix for inputs whose prediction was uncertain
    capture_threshold: float = 0.5  # uncertainty (0 sure .. 1 coin toss) at or above which an input is captured
    capture_per_minute: int = 60  # at most this many captures a minute
    tracking_uri: str | None = None  # the registry (read from MLFLOW_TRACKING_URI); unset = MLflow's default

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ServeSettings:
        """Read `KILN_<FIELD>` for every field, then apply `overrides` (from CLI flags) where not None."""
        return read_env(cls, environ, names=ENV_NAMES, parsers={"models": _names}, **overrides).validated()

    def validated(self) -> ServeSettings:
        checks = {
            "poll_seconds": self.poll_seconds >= 0,
            "webhook_tolerance_seconds": self.webhook_tolerance_seconds > 0,
            "swap_retry_seconds": self.swap_retry_seconds >= 0,
            "max_body_bytes": self.max_body_bytes > 0,
            "body_timeout_seconds": self.body_timeout_seconds > 0,
            "max_header_bytes": self.max_header_bytes >= 1024,
            "max_headers": self.max_headers >= 8,
            "header_timeout_seconds": self.header_timeout_seconds > 0,
            "max_connections": self.max_connections >= 1,
            "max_connections_per_client": 1 <= self.max_connections_per_client <= self.max_connections,
            "max_decoded_pixels": self.max_decoded_pixels >= 0,
            "decode_budget_pixels": self.decode_budget_pixels >= 1024 * 1024,
            "max_request_pixels": self.max_request_pixels >= 0,
            "max_batch_size": self.max_batch_size >= 1,
            "max_batch_ms": self.max_batch_ms >= 0,
            "max_queue_delay_ms": self.max_queue_delay_ms >= 0,
            "instances": self.instances >= 1,
            "inline_run_ms": self.inline_run_ms >= 0,
            "intra_op_threads": self.intra_op_threads >= 0,
            "shadow_percent": 0 <= self.shadow_percent <= 100,
            "drift_window": self.drift_window >= 10,
            "drift_min_samples": 1 <= self.drift_min_samples <= self.drift_window,
            "drift_percent": 0 <= self.drift_percent <= 100,
            "shadow_budget": 0 < self.shadow_budget <= 1,
            "drift_budget": 0 < self.drift_budget <= 1,
            "capture_threshold": 0 <= self.capture_threshold <= 1,
            "capture_per_minute": self.capture_per_minute >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise SettingsError(f"{env_name(name)}={getattr(self, name)!r} is out of range")
        if not self.alias:
            raise SettingsError("the alias to serve must not be empty")
        return self

    def env(self) -> dict[str, str]:
        """These settings as `KILN_*` variables, so that uvicorn worker processes rebuild the same object."""
        return to_env(self, names=ENV_NAMES)


ENV_NAMES = {"tracking_uri": "MLFLOW_TRACKING_URI"}  # every other field is KILN_<FIELD>


def env_name(field_name: str) -> str:
    """The environment variable of a settings field: KILN_<FIELD>, except MLflow's own tracking URI."""
    return core_env_name(field_name, ENV_NAMES)


def _names(var: str, raw: str) -> tuple[str, ...]:
    return parse_model_list(raw)


def parse_model_list(raw: str) -> tuple[str, ...]:
    """`a, b,,c` -> ("a", "b", "c"); duplicates are an error because each name is one slot."""
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SettingsError(f"model names given twice: {duplicates}")
    return names
