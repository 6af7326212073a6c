"""Fixtures for the YOLO tests: a tiny generated safety set, a network guard, clean torch global state.

.venv/bin/python -m pytest tests/projects/yolo -q
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import projects.yolo.offline  # noqa: F401  (first: ultralytics must see kiln's YOLO_CONFIG_DIR when imported)
from data.samples import SampleRequest, make_sample

from . import netguard


@pytest.fixture
def tiny_safety(tmp_path: Path) -> Path:
    """8 safety images of 64x64 (6 train, 2 val): enough for ultralytics to run two real epochs in seconds."""
    return make_sample("safety", SampleRequest(tmp_path / "safety", count=8, size=64, val=0.25))


@pytest.fixture
def net_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Refuse (and log to the returned file) any non-loopback lookup or connection from this process."""
    log = tmp_path / "network-attempts.log"
    for owner, name, replacement in netguard.patches(str(log)):
        monkeypatch.setattr(owner, name, replacement)
    return log


@pytest.fixture
def restore_torch_determinism() -> Iterator[None]:
    """ultralytics turns on deterministic algorithms process-wide; other tests must not inherit that."""
    import torch

    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)
