"""Settings fail fast with messages that name the variable, never its value."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from zhongshu.runtime import ConfigurationError, ServiceSettings, load_settings
from zhongshu.runtime.bus import redact_url


class NeedsAToken(ServiceSettings):
    api_token: SecretStr
    batch: int = 10


def test_a_missing_required_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZHONGSHU_API_TOKEN", raising=False)
    with pytest.raises(ConfigurationError, match="ZHONGSHU_API_TOKEN: is required but not set"):
        load_settings(NeedsAToken)


def test_an_invalid_value_is_named_without_echoing_a_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ZHONGSHU_API_TOKEN", "s3cr3t-value")
    monkeypatch.setenv("ZHONGSHU_BATCH", "many")
    with pytest.raises(ConfigurationError) as raised:
        load_settings(NeedsAToken)
    assert "ZHONGSHU_BATCH" in str(raised.value)
    assert "s3cr3t-value" not in str(raised.value)


def test_values_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZHONGSHU_API_TOKEN", "s3cr3t-value")
    monkeypatch.setenv("ZHONGSHU_NATS_URL", "nats://bus:4222")
    settings = load_settings(NeedsAToken)
    assert settings.nats_url == "nats://bus:4222"
    assert "s3cr3t-value" not in repr(settings)


def test_credentials_in_a_url_are_redacted() -> None:
    assert redact_url("nats://user:pw@host:4222") == "nats://***@host:4222"
    assert redact_url("nats://host:4222") == "nats://host:4222"
