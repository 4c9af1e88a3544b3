"""What the platforms answer becomes a value: rate limits carry their code and wait, refusals
their code, a platform that cannot be reached is ``Unreachable`` and one that does not answer
``Ambiguous``; a token's answer keeps its ``Date`` (the doctor's clock check); no app secret,
token or capability URL ends up in a result or a log line. Against the fake platforms."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator

import httpx
import pytest

from zhongshu.devstack.fakes.base_openapi import Injected
from zhongshu.devstack.fakes.dingtalk import FakeStreamGateway
from zhongshu.devstack.fakes.dingtalk_openapi import FakeDingTalkOpenAPI
from zhongshu.devstack.fakes.feishu_openapi import FakeFeishuOpenAPI
from zhongshu.devstack.fakes.feishu_ws import FeishuLongConnectionServer
from zhongshu.platforms import Credentials, DingTalkClient, FeishuClient, PlatformURLs
from zhongshu.platforms import http as platform_http
from zhongshu.platforms.dingtalk import StreamTicket
from zhongshu.platforms.feishu import Endpoint
from zhongshu.platforms.results import (
    Ambiguous,
    CredentialsRefused,
    Ok,
    RateLimited,
    Rejected,
    Token,
    Unreachable,
)

FEISHU = Credentials("cli_answers", "feishu-secret-never-shown")
DINGTALK = Credentials("ding-answers", "ding-secret-never-shown")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(params=["aiohttp", "httpcore"])
async def http(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    """Every answer is read the same over the services' client (aiohttp underneath) and over
    httpx's own transport."""
    client = platform_http.client(timeout=2) if request.param == "aiohttp" else None
    async with client or httpx.AsyncClient(timeout=2) as http_client:
        yield http_client


@pytest.fixture
async def feishu_fake() -> AsyncIterator[FakeFeishuOpenAPI]:
    async with FakeFeishuOpenAPI(
        app_id=FEISHU.key, app_secret=FEISHU.secret, bots={"hook-token-secret": None}
    ) as fake:
        yield fake


@pytest.fixture
async def dingtalk_fake() -> AsyncIterator[FakeDingTalkOpenAPI]:
    async with FakeDingTalkOpenAPI(
        app_key=DINGTALK.key,
        app_secret=DINGTALK.secret,
        robots={"robot-token-secret": None},
        robot_limit=1,
    ) as fake:
        yield fake


def feishu(http: httpx.AsyncClient, fake: FakeFeishuOpenAPI) -> FeishuClient:
    return FeishuClient(http, base_url=fake.base_url)


def dingtalk(http: httpx.AsyncClient, fake: FakeDingTalkOpenAPI) -> DingTalkClient:
    return DingTalkClient(http, api_url=fake.base_url, oapi_url=fake.base_url)


# --- rate limits ------------------------------------------------------------------------------


async def test_feishu_rate_limits_are_typed_with_the_code_and_the_reset_header(
    http: httpx.AsyncClient, feishu_fake: FakeFeishuOpenAPI
) -> None:
    client = feishu(http, feishu_fake)
    body = {"receive_id": "oc_1", "msg_type": "text", "content": '{"text": "hi"}'}
    path = "/open-apis/im/v1/messages?receive_id_type=chat_id"
    results = [await client.call(FEISHU, "POST", path, json=body) for _ in range(6)]
    assert [type(r) for r in results] == [Ok] * 5 + [RateLimited]  # 5 per chat and second
    limited = results[-1]
    assert isinstance(limited, RateLimited)
    assert limited.code == "99991400"
    assert 1.0 <= limited.retry_after_s <= 2.0  # x-ogw-ratelimit-reset


async def test_dingtalk_rate_limits_are_typed_on_the_openapi_the_oapi_and_the_webhooks(
    http: httpx.AsyncClient, dingtalk_fake: FakeDingTalkOpenAPI
) -> None:
    client = dingtalk(http, dingtalk_fake)
    dingtalk_fake.contact_limit.limit = 0
    looked_up = await client.call_oapi(DINGTALK, "/topapi/v2/user/get", json={"userid": "u1"})
    assert looked_up == RateLimited(1.0, "90018")

    url = f"{client.oapi_url}/robot/send?access_token=robot-token-secret"
    text = {"msgtype": "text", "text": {"content": "hi"}}
    assert isinstance(await client.post_webhook(url, text), Ok)
    assert await client.post_webhook(url, text) == RateLimited(600.0, "130101")  # blocked 10 min

    dingtalk_fake.inject(
        Injected(status=403, body={"code": "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi"})
    )
    send = {"robotCode": dingtalk_fake.robot_code, "msgKey": "sampleText", "msgParam": "{}"}
    throttled = await client.call(
        DINGTALK, "POST", "/v1.0/robot/groupMessages/send", json=send | {"openConversationId": "c"}
    )
    assert throttled == RateLimited(1.0, "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi")


# --- refusals and failures --------------------------------------------------------------------


async def test_a_refusal_keeps_the_platforms_code_and_an_over_long_one_says_so(
    http: httpx.AsyncClient, feishu_fake: FakeFeishuOpenAPI, dingtalk_fake: FakeDingTalkOpenAPI
) -> None:
    unknown = await feishu(http, feishu_fake).call(
        FEISHU, "GET", "/open-apis/contact/v3/users/ou_nobody"
    )
    assert isinstance(unknown, Rejected)
    assert not isinstance(unknown, CredentialsRefused)
    assert unknown.code == "41050"
    body = {"receive_id": "oc_1", "msg_type": "text", "content": '{"text": "%s"}' % ("x" * 200_000)}
    too_long = await feishu(http, feishu_fake).call(
        FEISHU, "POST", "/open-apis/im/v1/messages?receive_id_type=chat_id", json=body
    )
    assert isinstance(too_long, Rejected)
    assert (too_long.code, too_long.too_long) == ("230025", True)
    no_robot = await dingtalk(http, dingtalk_fake).call(
        DINGTALK, "POST", "/v1.0/robot/groupMessages/send", json={"robotCode": "other"}
    )
    assert isinstance(no_robot, Rejected)
    assert no_robot.code == "resource.not.found"


async def test_a_platform_that_cannot_be_reached_is_unreachable_and_one_that_fails_is_ambiguous(
    http: httpx.AsyncClient, feishu_fake: FakeFeishuOpenAPI
) -> None:
    nowhere = FeishuClient(http, base_url=f"http://127.0.0.1:{closed_port()}")
    token = await nowhere.request_token(FEISHU)
    assert isinstance(token, Unreachable)
    assert token.reason.startswith(("ConnectError", "ClientConnectorError"))
    call = await nowhere.call(FEISHU, "GET", "/open-apis/contact/v3/users/ou_1")
    assert isinstance(call, Unreachable)
    assert call.reason.startswith(
        (
            "Feishu token request failed: ConnectError",
            "Feishu token request failed: ClientConnectorError",
        )
    )
    not_a_url = await FeishuClient(http, base_url="open.feishu.cn").request_token(FEISHU)
    assert isinstance(not_a_url, Unreachable)

    feishu_fake.set_departments("ou_1", "od-1")
    feishu_fake.inject(Injected(status=500, body={"code": 55001, "msg": "internal error"}))
    failed = await feishu(http, feishu_fake).call(FEISHU, "GET", "/open-apis/contact/v3/users/ou_1")
    assert failed == Ambiguous("Feishu answered HTTP 500", 500)
    feishu_fake.inject(Injected(stall_s=3))  # longer than the client's 2 s
    silent = await feishu(http, feishu_fake).call(FEISHU, "GET", "/open-apis/contact/v3/users/ou_1")
    assert silent == Ambiguous("no answer within 2 s")


# --- what the doctor and the ingress services ask -------------------------------------------


async def test_a_token_answer_keeps_the_platforms_date_header(
    http: httpx.AsyncClient, feishu_fake: FakeFeishuOpenAPI, dingtalk_fake: FakeDingTalkOpenAPI
) -> None:
    for result in (
        await feishu(http, feishu_fake).request_token(FEISHU),
        await dingtalk(http, dingtalk_fake).request_token(DINGTALK),
        await dingtalk(http, dingtalk_fake).request_oapi_token(DINGTALK),
        await feishu(http, feishu_fake).request_token(Credentials(FEISHU.key, "wrong")),
    ):
        assert isinstance(result, Token | CredentialsRefused), result
        assert result.date is not None
        assert result.date.endswith(" GMT")


async def test_the_long_connection_endpoint_and_the_stream_ticket_are_values(
    http: httpx.AsyncClient,
) -> None:
    async with FeishuLongConnectionServer(app_id=FEISHU.key, app_secret=FEISHU.secret) as ws:
        client = FeishuClient(http, base_url=ws.base_url)
        endpoint = await client.ws_endpoint(FEISHU)
        assert isinstance(endpoint, Endpoint)
        assert endpoint.url.startswith("ws://127.0.0.1")
        assert endpoint.client_config["ReconnectInterval"] == 1
        refused = await client.ws_endpoint(Credentials(FEISHU.key, "wrong"))
        assert isinstance(refused, Rejected)
        assert refused.code == "1000040344"
    async with FakeStreamGateway(client_id=DINGTALK.key, client_secret=DINGTALK.secret) as gw:
        client_dt = DingTalkClient(http, api_url=gw.base_url)
        opened = await client_dt.open_stream(
            DINGTALK, subscriptions=[{"type": "EVENT", "topic": "*"}], user_agent="t", local_ip="1"
        )
        assert isinstance(opened, StreamTicket)
        assert opened.ticket in gw.tickets
        assert opened.ticket not in repr(opened)
        wrong = await client_dt.open_stream(
            Credentials(DINGTALK.key, "wrong"), subscriptions=[], user_agent="t", local_ip="1"
        )
        assert isinstance(wrong, Rejected)
        assert wrong.code == "InvalidAuthentication"
        gw.refuse_open = True
        assert isinstance(
            await client_dt.open_stream(DINGTALK, subscriptions=[], user_agent="t", local_ip="1"),
            Ambiguous,
        )


# --- secrets ----------------------------------------------------------------------------------


async def test_no_secret_token_or_hook_appears_in_results_or_logs(
    http: httpx.AsyncClient,
    feishu_fake: FakeFeishuOpenAPI,
    dingtalk_fake: FakeDingTalkOpenAPI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    # A service's setup_logging (run by an earlier test in the same process) pins httpx at
    # WARNING; this test needs its request lines to prove they carry no secret.
    caplog.set_level(logging.DEBUG, logger="httpx")
    client_fs, client_dt = feishu(http, feishu_fake), dingtalk(http, dingtalk_fake)
    dingtalk_fake.set_departments("staff-1", 7)
    session_url, _ = dingtalk_fake.session_webhook("cid-1")
    text = {"msgtype": "text", "text": {"content": "hi"}}
    results = [
        await client_fs.request_token(FEISHU),
        await client_fs.request_token(Credentials(FEISHU.key, "wrong-feishu-secret")),
        await client_fs.call_without_token("POST", "/open-apis/bot/v2/hook/hook-token-secret"),
        await client_dt.request_token(Credentials(DINGTALK.key, "wrong-ding-secret")),
        await client_dt.request_oapi_token(Credentials(DINGTALK.key, "wrong-ding-secret")),
        await client_dt.call_oapi(DINGTALK, "/topapi/v2/user/get", json={"userid": "staff-1"}),
        await client_dt.post_webhook(session_url, text),
        await client_dt.post_webhook(
            f"{client_dt.oapi_url}/robot/send?access_token=robot-token-secret", text
        ),
        await FeishuClient(http, base_url=f"http://127.0.0.1:{closed_port()}").request_token(
            FEISHU
        ),
    ]
    # What this process logged (the fakes' own uvicorn access log is the platform's side).
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("uvicorn"))
    assert "/gettoken" in logged  # httpx logged the calls
    issued = [*feishu_fake.tokens, *dingtalk_fake.tokens, *dingtalk_fake.oapi_tokens]
    session = session_url.split("session=")[1]
    secrets = [FEISHU.secret, DINGTALK.secret, "wrong-feishu-secret", "wrong-ding-secret"]
    for secret in [*secrets, *issued, "hook-token-secret", "robot-token-secret", session]:
        assert secret not in logged
        assert secret not in repr(results)


# --- settings ---------------------------------------------------------------------------------


def test_the_base_urls_come_from_the_variables_the_services_always_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FEISHU_BASE_URL", "https://open.larksuite.com")
    monkeypatch.setenv("DINGTALK_API_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("DINGTALK_OAPI_URL", "http://127.0.0.1:2")
    urls = PlatformURLs()
    assert (urls.feishu_base_url, urls.dingtalk_api_url, urls.dingtalk_oapi_url) == (
        "https://open.larksuite.com",
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
    )
    given = PlatformURLs.from_environ({"FEISHU_BASE_URL": "http://fake", "DINGTALK_API_URL": ""})
    assert given.feishu_base_url == "http://fake"  # only what the mapping names
    assert given.dingtalk_api_url == "https://api.dingtalk.com"
    assert given.dingtalk_oapi_url == "https://oapi.dingtalk.com"
