"""The alias timeline: event storage in registered-model tags, and the stack that rollback walks.

.venv/bin/python -m pytest tests/registry/test_history.py -q
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from mlflow import MlflowClient

from registry.errors import RegistryError
from registry.history import AliasEvent, alias_stack, parse_events, record_event, rollback_target


def event(version: int, action: str = "promote", alias: str = "production") -> AliasEvent:
    return AliasEvent("m", alias, action, version, None, "2026-01-01T00:00:00+00:00", "me")


def test_promotions_push_and_rollbacks_walk_back() -> None:
    events = [event(1), event(2), event(3)]
    assert alias_stack(events, "production") == [1, 2, 3]
    assert rollback_target(events, "production", current=3) == 2
    events.append(event(2, "rollback"))
    assert rollback_target(events, "production", current=2) == 1  # not back to 3
    events.append(event(1, "rollback"))
    assert rollback_target(events, "production", current=1) is None


def test_other_aliases_do_not_count() -> None:
    events = [event(1), event(5, alias="staging"), event(2)]
    assert alias_stack(events, "production") == [1, 2]
    assert alias_stack(events, "staging") == [5]


def test_alias_moved_outside_kiln_rolls_back_to_what_kiln_last_set() -> None:
    assert rollback_target([event(1), event(2)], "production", current=7) == 2


def test_rollback_to_a_version_never_on_the_stack_is_pushed() -> None:
    assert alias_stack([event(1), event(2), event(9, "rollback")], "production") == [1, 2, 9]


def test_events_round_trip_through_model_tags_in_time_order(client: MlflowClient) -> None:
    client.create_registered_model("m")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    later = AliasEvent("m", "production", "rollback", 1, 2, "t2", "me", reason="bad", metric="val_iou", value=0.5)
    record_event(client, later, start + timedelta(seconds=5))
    forced = AliasEvent("m", "production", "promote", 2, 1, "t1", "me", forced=True, overridden=("val_iou low",))
    record_event(client, forced, start)
    events = parse_events("m", client.get_registered_model("m").tags)
    assert [e.version for e in events] == [2, 1]
    assert events[0] == forced and events[0].overridden == ("val_iou low",)
    assert events[1] == later and events[1].key.startswith("kiln.history.20260101T000005")


def test_a_corrupt_history_tag_is_named() -> None:
    with pytest.raises(RegistryError, match="kiln.history.x"):
        parse_events("m", {"kiln.history.x": "{not json"})
    with pytest.raises(RegistryError, match="unknown action 'demote'"):
        parse_events(
            "m",
            {
                "kiln.history.y": '{"alias": "p", "action": "demote", "version": 1, '
                '"previous_version": null, "at": "t", "by": "me"}'
            },
        )
