"""Refused credentials become the process's `credentials.<platform>:<app>` condition, which its
heartbeat carries to the watchdog; the next token it is given makes the condition ok again."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from zhongshu.devstack.fakes.feishu_openapi import FakeFeishuOpenAPI
from zhongshu.platforms import Credentials, FeishuClient
from zhongshu.platforms.results import CredentialsRefused
from zhongshu.runtime import conditions

APP = Credentials("cli_condition", "the-right-secret")


@pytest.fixture
def clean_conditions() -> Iterator[None]:
    conditions.reset()
    yield
    conditions.reset()


async def test_refused_credentials_set_a_failing_condition_until_a_token_comes(
    clean_conditions: None,
) -> None:
    async with (
        FakeFeishuOpenAPI(app_id=APP.key, app_secret=APP.secret) as fake,
        httpx.AsyncClient(timeout=5) as http,
    ):
        client = FeishuClient(http, base_url=fake.base_url)
        path = "/open-apis/contact/v3/users/ou_1"
        refused = await client.call(Credentials(APP.key, "wrong"), "GET", path)
        assert isinstance(refused, CredentialsRefused)
        condition = conditions.snapshot()[f"credentials.feishu:{APP.key}"]
        assert condition.ok is False
        assert APP.key in condition.detail
        assert "the-right-secret" not in condition.detail

        await client.call(APP, "GET", path)
        assert conditions.snapshot()[f"credentials.feishu:{APP.key}"].ok is True
