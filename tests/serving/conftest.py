"""Serving fixtures: a module-wide sqlite registry holding one tiny model of every task, and the app on it.

.venv/bin/python -m pytest tests/serving -q
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# Test modules here share helpers (serving_helpers.py); with --import-mode=importlib this folder is not on
# sys.path by itself.
sys.path.insert(0, str(Path(__file__).parent))

from serving_helpers import (  # noqa: E402
    Registry,
    create_store,
    det_model,
    image_example,
    new_registry,
    plain_model,
    reg_model,
    seg_model,
    tabular_model,
)

ALL_MODELS = ("seg", "det", "reg", "tab", "plain")


@pytest.fixture(scope="session")
def template_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty sqlite store, made once; each registry below is a copy of the file."""
    return create_store(tmp_path_factory.mktemp("template-store"))


@pytest.fixture
def fresh_registry(template_store: Path, tmp_path: Path) -> Registry:
    """An empty registry of this test's own in tmp_path, for tests that move aliases."""
    return new_registry(template_store, tmp_path)


@pytest.fixture(scope="module")
def registry(template_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """One registry per test module with every kind of model at version 1, alias production."""
    reg = new_registry(template_store, tmp_path_factory.mktemp("registry"))
    reg.register("seg", seg_model(), image_example(32))
    reg.register("det", det_model(), image_example(64, 3))
    reg.register("reg", reg_model(), image_example(16))
    tab, rows = tabular_model()
    reg.register("tab", tab, rows)
    reg.register("plain", plain_model(), np.ones((1, 3), dtype=np.float32))
    return reg


@pytest.fixture(scope="module")
def client(registry: Registry) -> Iterator[Any]:
    """A TestClient on an app serving every model of the module registry (lifespan run: models loaded)."""
    from fastapi.testclient import TestClient

    from serving.edge.app import create_app

    app = create_app(registry.settings(ALL_MODELS))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
