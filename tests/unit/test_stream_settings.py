from __future__ import annotations

import pytest
from pydantic import ValidationError

from stream import names
from stream.settings import StreamSettings


def test_settings_defaults_suit_the_embedded_broker() -> None:
    s = StreamSettings()
    assert s.kafka.uploads_topic == names.UPLOADS_TOPIC
    assert s.kafka.group_id == names.GROUP_ID
    assert not s.kafka.enable_idempotence
    assert s.kafka.producer_max_batch_bytes == 16


def test_settings_nested_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNTHGUARD_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1234")
    monkeypatch.setenv("SYNTHGUARD_FETCH__ALLOWED_HOSTS", '["cdn.example.com"]')
    monkeypatch.setenv("SYNTHGUARD_WORKER__BATCH_MAX", "8")
    monkeypatch.setenv("SYNTHGUARD_RUNNER", "faust")
    s = StreamSettings()
    assert s.kafka.bootstrap_servers == "127.0.0.1:1234"
    assert s.fetch.allowed_hosts == ["cdn.example.com"]
    assert (s.worker.batch_max, s.runner) == (8, "faust")


def test_settings_are_frozen_and_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError):
        StreamSettings().runner = "faust"  # type: ignore[misc]
    monkeypatch.setenv("SYNTHGUARD_WORKER__BATCH_MAX", "0")
    with pytest.raises(ValidationError):
        StreamSettings()
