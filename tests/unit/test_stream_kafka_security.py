from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from stream.kafka_security import aiokafka_security, faust_credentials
from stream.settings import KafkaSettings, StreamSettings


def test_plaintext_adds_nothing() -> None:
    k = KafkaSettings()
    assert aiokafka_security(k) == {}
    assert faust_credentials(k) is None


def test_sasl_ssl_arguments_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SYNTHGUARD_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("SYNTHGUARD_KAFKA__SASL_USERNAME", "synthguard-worker")
    monkeypatch.setenv("SYNTHGUARD_KAFKA__SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("SYNTHGUARD_KAFKA__GROUP_INSTANCE_ID", "worker-abc")
    k = StreamSettings().kafka
    assert k.group_instance_id == "worker-abc"
    assert "s3cret" not in repr(k)
    kw = aiokafka_security(k)
    assert kw["security_protocol"] == "SASL_SSL"
    assert kw["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (kw["sasl_plain_username"], kw["sasl_plain_password"]) == (
        "synthguard-worker",
        "s3cret",
    )
    assert isinstance(kw["ssl_context"], ssl.SSLContext)
    creds = faust_credentials(k)
    assert (creds.username, creds.password) == ("synthguard-worker", "s3cret")


def test_ssl_with_a_missing_ca_file_fails_loudly(tmp_path: Path) -> None:
    k = KafkaSettings(security_protocol="SSL", ssl_cafile=tmp_path / "missing.pem")
    with pytest.raises(FileNotFoundError):
        aiokafka_security(k)


def test_sasl_without_credentials_is_a_settings_error() -> None:
    with pytest.raises(ValidationError, match="needs sasl_username"):
        KafkaSettings(security_protocol="SASL_PLAINTEXT")
