"""`list_models`: the version behind each alias and the key metrics of its source run.

.venv/bin/python -m pytest tests/registry/test_models.py -q
"""

from __future__ import annotations

from collections.abc import Callable

from registry.models import key_metrics, list_models
from registry.promotion import history, promote

MakeVersion = Callable[..., int]  # the `make_version` fixture of tests/registry/conftest.py


def test_lists_every_model_with_aliases_in_a_fixed_order(make_version: MakeVersion) -> None:
    hint = {"kiln.metric": "val_iou", "kiln.mode": "max"}
    v1 = make_version("seg", {"val_iou": 0.7, "val_loss": 0.3, "train_loss": 0.2, "lr": 1e-3}, run_tags=hint)
    v2 = make_version("seg", {"val_iou": 0.8, "system/cpu_utilization_percentage": 50.0}, run_tags=hint)
    make_version("tab", {"auc": 0.9})
    promote("seg", version=v1)
    promote("seg", version=v2, alias="staging")
    promote("seg", version=v2, alias="a-test")
    seg, tab = list_models()
    assert (seg.name, seg.latest_version, tab.name, tab.latest_version, tab.aliases) == ("seg", 2, "tab", 1, ())
    assert [(a.alias, a.version) for a in seg.aliases] == [("production", v1), ("staging", v2), ("a-test", v2)]
    production = seg.aliases[0]
    assert production.metrics == {"val_iou": 0.7, "val_loss": 0.3}  # hint first, then val_*; no train_loss/lr
    assert list(production.metrics) == ["val_iou", "val_loss"]
    assert production.promoted_by == "tester"
    # v2 holds two aliases; each shows when that alias moved, from the timeline, not the version's last move
    moved_at = {e.alias: e.at for e in history("seg")}
    assert [a.promoted_at for a in seg.aliases] == [moved_at["production"], moved_at["staging"], moved_at["a-test"]]
    assert seg.aliases[1].metrics == {"val_iou": 0.8}  # system metrics left out
    assert production.run_id is not None and len(production.run_id) == 32
    assert (seg.latest_run_id, seg.latest_metrics) == (seg.aliases[1].run_id, {"val_iou": 0.8})
    assert tab.latest_metrics == {"auc": 0.9} and tab.latest_run_id is not None  # shown before any promotion


def test_named_metrics_replace_the_key_ones(make_version: MakeVersion) -> None:
    promote("seg", version=make_version("seg", {"val_iou": 0.7, "train_loss": 0.2}))
    (seg,) = list_models(metrics=["train_loss", "nope"])
    assert seg.aliases[0].metrics == {"train_loss": 0.2}


def test_key_metrics_fall_back_to_plain_metrics_without_val_ones() -> None:
    metrics = {
        "auc": 0.9,
        "lr": 0.1,
        "epoch": 3.0,
        "best_epoch": 4.0,
        "registered_version": 2.0,
        "system/gpu": 1.0,
        **{f"m{i}": float(i) for i in range(9)},
    }
    shown = key_metrics(metrics, (), hint=None)
    assert list(shown) == ["auc", "m0", "m1", "m2", "m3", "m4"]  # sorted, capped at 6, no bookkeeping


def test_empty_registry(registry_uri: str) -> None:
    assert list_models() == []
