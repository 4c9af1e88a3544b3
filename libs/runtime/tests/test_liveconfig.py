"""The running configuration: pushed once, applied by every replica within seconds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from zhongshu.contracts.streams import CONFIG_KV
from zhongshu.runtime.errors import ConfigurationError
from zhongshu.runtime.hubconfig import HubConfig
from zhongshu.runtime.liveconfig import CONFIG_KEY, LiveConfig, push


@pytest_asyncio.fixture(autouse=True)
async def shared_key_restored(
    provisioned_nats_url: str, js: JetStreamContext
) -> AsyncIterator[None]:
    """The session's `config` key is shared with every other test: leave it as found."""
    bucket = await js.key_value(CONFIG_KV.bucket)
    try:
        before = (await bucket.get(CONFIG_KEY)).value
    except NotFoundError:
        before = None
    yield
    if before:
        await bucket.put(CONFIG_KEY, before)
    else:
        await bucket.purge(CONFIG_KEY)


ONE_APP = """
apps:
  acme-dingtalk:
    tenant: acme
    platform: dingtalk
    dingtalk: {app_key: ding_xxx, app_secret: "${DINGTALK_APP_SECRET}"}
    rate_limit: {per_user: RATE}
"""


async def test_every_replica_applies_a_pushed_change_without_restart(
    provisioned_nats_url: str, js: JetStreamContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DINGTALK_APP_SECRET", "dingtalk-secret-value")
    await push(js, ONE_APP.replace("RATE", "10/min"))
    replicas = [await LiveConfig.open(js), await LiveConfig.open(js)]
    seen: list[HubConfig] = []
    replicas[1].subscribe(seen.append)
    try:
        limit = replicas[0].current.apps["acme-dingtalk"].rate_limit.per_user
        assert limit is not None
        assert limit.count == 10
        await push(js, ONE_APP.replace("RATE", "3/min"))
        for _ in range(100):
            if all(
                (r.current.apps["acme-dingtalk"].rate_limit.per_user or limit).count == 3
                for r in replicas
            ):
                break
            await asyncio.sleep(0.05)
        for replica in replicas:
            per_user = replica.current.apps["acme-dingtalk"].rate_limit.per_user
            assert per_user is not None
            assert per_user.count == 3
        assert seen
        assert seen[-1].apps["acme-dingtalk"].rate_limit.per_user is not None
    finally:
        for replica in replicas:
            await replica.close()


async def test_secrets_are_stored_as_references_never_resolved(
    provisioned_nats_url: str, js: JetStreamContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DINGTALK_APP_SECRET", "dingtalk-secret-value")
    await push(js, ONE_APP.replace("RATE", "10/min"))
    stored = await (await js.key_value(CONFIG_KV.bucket)).get(CONFIG_KEY)
    assert stored.value is not None
    assert b"${DINGTALK_APP_SECRET}" in stored.value
    assert b"dingtalk-secret-value" not in stored.value


async def test_an_invalid_push_is_refused_and_changes_nothing(
    provisioned_nats_url: str, js: JetStreamContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DINGTALK_APP_SECRET", "x")
    revision = await push(js, ONE_APP.replace("RATE", "10/min"))
    with pytest.raises(ConfigurationError, match=r"apps\.acme-dingtalk\.rate_limit\.per_user"):
        await push(js, ONE_APP.replace("RATE", "lots"))
    stored = await (await js.key_value(CONFIG_KV.bucket)).get(CONFIG_KEY)
    assert stored.revision == revision


async def test_a_replica_missing_another_services_secret_still_reads_the_rest(
    provisioned_nats_url: str, js: JetStreamContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DINGTALK_APP_SECRET", "x")
    await push(js, ONE_APP.replace("RATE", "7/min"))
    monkeypatch.delenv("DINGTALK_APP_SECRET")
    live = await LiveConfig.open(js)
    try:
        app = live.current.apps["acme-dingtalk"]
        assert app.rate_limit.per_user is not None
        assert app.rate_limit.per_user.count == 7
        assert app.dingtalk is not None
        assert app.dingtalk.app_secret.get_secret_value() == ""
    finally:
        await live.close()
