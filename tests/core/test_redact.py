"""Credentials never printed: URI passwords masked, known secrets removed."""

from __future__ import annotations

import pytest

from core.redact import mask_uri, redact


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("postgresql://kiln:s3cret@db:5432/mlflow", "postgresql://kiln:***@db:5432/mlflow"),
        (
            "postgresql+psycopg://u:p%40ss@127.0.0.1/m?sslmode=require",
            "postgresql+psycopg://u:***@127.0.0.1/m?sslmode=require",
        ),
        ("postgresql://kiln@db/mlflow", "postgresql://kiln@db/mlflow"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("sqlite:///tmp/mlflow.db", "sqlite:///tmp/mlflow.db"),
    ],
)
def test_mask_uri(uri: str, expected: str) -> None:
    assert mask_uri(uri) == expected


def test_redact_masks_every_uri_and_named_secret() -> None:
    text = "connect postgresql://a:pw1@h/db failed; retry https://b:pw2@x.example key=AKIASECRETVALUE"
    out = redact(text, ["AKIASECRETVALUE", None, ""])
    assert "pw1" not in out and "pw2" not in out and "AKIASECRETVALUE" not in out
    assert "postgresql://a:***@h/db" in out and "https://b:***@x.example" in out
