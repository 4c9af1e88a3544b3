"""Access tokens against the fake open platforms: fetched once and reused (across replicas through
Redis, in process without it), fetched again once when the platform refuses one, and a refusal
of the app's credentials, or of a token just issued, is a typed value, never an exception.

Each case runs on the three token-authenticated APIs: Feishu (``tenant_access_token``), the
DingTalk OpenAPI (header token) and DingTalk's legacy oapi (``/gettoken``, token in the query)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx
import pytest
from redis.asyncio import Redis

from zhongshu.devstack.fakes.dingtalk_openapi import FakeDingTalkOpenAPI
from zhongshu.devstack.fakes.feishu_openapi import FakeFeishuOpenAPI
from zhongshu.platforms import Credentials, DingTalkClient, FeishuClient, TokenCache
from zhongshu.platforms.results import CallResult, CredentialsRefused, Ok


@dataclass
class Api:
    """One token-authenticated API of a fake: a call that needs the token, and the fake's
    token bookkeeping."""

    fake: FakeFeishuOpenAPI | FakeDingTalkOpenAPI
    credentials: Credentials
    call: Callable[[TokenCache, Credentials], Awaitable[CallResult]]
    forget_tokens: Callable[[], None]

    @property
    def token_requests(self) -> int:
        return self.fake.token_requests


def feishu_api(run: str, lifetime_s: int) -> Api:
    fake = FakeFeishuOpenAPI(
        app_id=f"cli_{run}", app_secret=f"feishu-secret-{run}", token_lifetime_s=lifetime_s
    )
    fake.set_departments("ou_alice", "od-sales")

    async def call(tokens: TokenCache, app: Credentials) -> CallResult:
        async with httpx.AsyncClient(timeout=5) as http:
            client = FeishuClient(http, base_url=fake.base_url, tokens=tokens)
            return await client.call(app, "GET", "/open-apis/contact/v3/users/ou_alice")

    return Api(fake, Credentials(fake.app_id, fake.app_secret), call, fake.tokens.clear)


def dingtalk_api(run: str, lifetime_s: int) -> Api:
    fake = FakeDingTalkOpenAPI(
        app_key=f"ding-{run}",
        app_secret=f"ding-secret-{run}",
        robot_code=f"robot-{run}",
        token_lifetime_s=lifetime_s,
    )
    body = {
        "robotCode": fake.robot_code,
        "msgKey": "sampleText",
        "msgParam": '{"content": "hi"}',
        "openConversationId": "cid-group",
    }

    async def call(tokens: TokenCache, app: Credentials) -> CallResult:
        async with httpx.AsyncClient(timeout=5) as http:
            client = DingTalkClient(http, api_url=fake.base_url, tokens=tokens)
            return await client.call(app, "POST", "/v1.0/robot/groupMessages/send", json=body)

    return Api(fake, Credentials(fake.app_key, fake.app_secret), call, fake.tokens.clear)


def dingtalk_oapi(run: str, lifetime_s: int) -> Api:
    fake = FakeDingTalkOpenAPI(
        app_key=f"ding-{run}", app_secret=f"ding-secret-{run}", token_lifetime_s=lifetime_s
    )
    fake.set_departments("staff-1", 1, 42)

    async def call(tokens: TokenCache, app: Credentials) -> CallResult:
        async with httpx.AsyncClient(timeout=5) as http:
            client = DingTalkClient(http, oapi_url=fake.base_url, tokens=tokens)
            return await client.call_oapi(app, "/topapi/v2/user/get", json={"userid": "staff-1"})

    return Api(fake, Credentials(fake.app_key, fake.app_secret), call, fake.oapi_tokens.clear)


APIS = {"feishu": feishu_api, "dingtalk": dingtalk_api, "dingtalk-oapi": dingtalk_oapi}
MakeApi = Callable[..., Awaitable[Api]]


@pytest.fixture(params=sorted(APIS))
async def make_api(request: pytest.FixtureRequest) -> AsyncIterator[MakeApi]:
    """Starts the fake of one API (credentials unique to the test: Redis is the session's)."""
    started: list[Api] = []

    async def make(lifetime_s: int = 7200) -> Api:
        api = APIS[request.param](uuid.uuid4().hex[:8], lifetime_s)
        await api.fake.start()
        started.append(api)
        return api

    yield make
    for api in started:
        await api.fake.stop()


async def test_a_token_is_fetched_once_and_reused_by_every_replica_through_redis(
    make_api: MakeApi, redis: Redis
) -> None:
    api = await make_api()
    replica_a, replica_b = TokenCache(redis), TokenCache(redis)
    results = [await api.call(cache, api.credentials) for cache in (replica_a, replica_a)]
    results.append(await api.call(replica_b, api.credentials))
    assert all(isinstance(result, Ok) for result in results), results
    assert api.token_requests == 1


async def test_without_redis_the_token_is_cached_in_the_process(make_api: MakeApi) -> None:
    api = await make_api()
    tokens = TokenCache()
    for _ in range(3):
        assert isinstance(await api.call(tokens, api.credentials), Ok)
    assert api.token_requests == 1
    assert isinstance(await api.call(TokenCache(), api.credentials), Ok)  # another process
    assert api.token_requests == 2


async def test_a_refused_token_is_fetched_again_once_and_the_call_goes_through(
    make_api: MakeApi, redis: Redis
) -> None:
    api = await make_api()
    tokens = TokenCache(redis)
    assert isinstance(await api.call(tokens, api.credentials), Ok)
    api.forget_tokens()  # revoked, or expired early
    assert isinstance(await api.call(tokens, api.credentials), Ok)
    assert api.token_requests == 2
    assert isinstance(await api.call(TokenCache(redis), api.credentials), Ok)
    assert api.token_requests == 2  # the new token replaced the refused one in Redis


async def test_a_fresh_token_refused_again_is_credentials_refused_after_one_retry(
    make_api: MakeApi,
) -> None:
    api = await make_api(lifetime_s=0)  # every token the fake issues is already expired
    result = await api.call(TokenCache(), api.credentials)
    assert isinstance(result, CredentialsRefused), result
    assert "refused a token it had just issued" in result.reason
    assert api.token_requests == 2


async def test_wrong_credentials_are_a_typed_refusal_with_the_platforms_code(
    make_api: MakeApi,
) -> None:
    api = await make_api()
    wrong = Credentials(api.credentials.key, "not-the-secret")
    result = await api.call(TokenCache(), wrong)
    assert isinstance(result, CredentialsRefused), result
    assert result.code in {"10014", "invalidClientIdOrSecret", "40089"}
    assert result.message
    assert api.credentials.key in result.reason
    assert "not-the-secret" not in repr(result)
    again = await api.call(TokenCache(), wrong)  # nothing was cached: asked again
    assert isinstance(again, CredentialsRefused)
    assert again.code == result.code
    assert api.token_requests == 2
