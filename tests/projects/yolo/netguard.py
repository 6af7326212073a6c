"""A socket guard for tests: any attempt to resolve or reach a non-loopback host is recorded and refused.

    python -c "import netguard; netguard.install('/tmp/net.log')"

Used in-process (through pytest's monkeypatch, see `patches`) and, for `mlflow run` subprocesses, as the body
of a `sitecustomize.py` on PYTHONPATH, so every Python process in the chain carries it from its first line.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

LOCAL_PREFIXES = ("127.", "::1", "localhost", "0.0.0.0")


def is_local(host: Any) -> bool:
    text = str(host or "")
    return text in ("", "::") or text.startswith(LOCAL_PREFIXES)


def patches(log_path: str) -> list[tuple[Any, str, Callable[..., Any]]]:
    """(owner, attribute, replacement) triples that refuse and log every non-loopback lookup or connect."""
    original_getaddrinfo = socket.getaddrinfo
    original_gethostbyname = socket.gethostbyname
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex

    def record(what: str, target: Any) -> None:
        with open(log_path, "a") as log:
            log.write(f"{os.getpid()} {what} {target!r}\n")
        raise OSError(f"network disabled in tests: {what} {target!r}")

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not is_local(host):
            record("getaddrinfo", host)
        return original_getaddrinfo(host, *args, **kwargs)

    def gethostbyname(host: str) -> str:
        if not is_local(host):
            record("gethostbyname", host)
        return original_gethostbyname(host)

    def remote(sock: socket.socket, address: Any) -> bool:
        return sock.family in (socket.AF_INET, socket.AF_INET6) and not is_local(address[0])

    def connect(self: socket.socket, address: Any) -> None:
        if remote(self, address):
            record("connect", address)
        return original_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if remote(self, address):
            record("connect_ex", address)
        return original_connect_ex(self, address)

    return [
        (socket, "getaddrinfo", getaddrinfo),
        (socket, "gethostbyname", gethostbyname),
        (socket.socket, "connect", connect),
        (socket.socket, "connect_ex", connect_ex),
    ]


def mark_installed(log_path: str) -> None:
    """Append this process id to `<log>.installed`, so a test can tell the guard was really live."""
    with open(f"{log_path}.installed", "a") as marker:
        marker.write(f"{os.getpid()}\n")


def install(log_path: str) -> None:
    for owner, name, replacement in patches(log_path):
        setattr(owner, name, replacement)
