"""Every platform call is a CLIENT span and a count by route template and typed outcome: ids
become ``{id}`` (bounded labels), and no token, secret or query string reaches a span or a
label. Against the fake platforms."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from zhongshu.devstack.fakes.dingtalk_openapi import FakeDingTalkOpenAPI
from zhongshu.devstack.fakes.feishu_openapi import FakeFeishuOpenAPI
from zhongshu.platforms import Credentials, DingTalkClient, FeishuClient
from zhongshu.platforms import http as platform_http
from zhongshu.platforms.observe import REQUESTS, SECONDS, outcome, route, safe_path
from zhongshu.platforms.results import (
    Ambiguous,
    CredentialsRefused,
    Ok,
    RateLimited,
    Rejected,
    Token,
    Unreachable,
)

FEISHU = Credentials("cli_observe", "feishu-secret-never-recorded")
DINGTALK = Credentials("ding-observe", "ding-secret-never-recorded")


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/open-apis/im/v1/messages?receive_id_type=chat_id", "/open-apis/im/v1/messages"),
        (
            "/open-apis/im/v1/messages/om_dc13264520392913993dd051dba21dcf/reply",
            "/open-apis/im/v1/messages/{id}/reply",
        ),
        (
            "/open-apis/cardkit/v1/cards/7355372766134157313/elements/stream_md/content",
            "/open-apis/cardkit/v1/cards/{id}/elements/stream_md/content",
        ),
        ("/open-apis/bot/v2/hook/abcdefghijklmnop", "/open-apis/bot/v2/hook/{token}"),
        ("/open-apis/auth/v3/tenant_access_token/internal", None),
        ("/v1.0/robot/groupMessages/send", None),
        ("/robot/sendBySession?session=capability-secret", "/robot/sendBySession"),
        ("/topapi/v2/user/get", None),
    ],
)
def test_an_api_is_labelled_by_its_route_template(path: str, template: str | None) -> None:
    assert route(path) == (template or path)


def test_a_hook_token_and_the_query_stay_out_of_the_recorded_path() -> None:
    assert safe_path("/open-apis/bot/v2/hook/tok-123?x=1") == "/open-apis/bot/v2/hook/***"
    assert safe_path("/robot/send?access_token=secret") == "/robot/send"


def test_every_typed_result_has_an_outcome() -> None:
    assert [
        outcome(r)
        for r in (
            Ok(),
            Token("t", 7200.0),
            RateLimited(1.0),
            Rejected("no"),
            CredentialsRefused("bad secret"),
            Ambiguous("no answer"),
            Unreachable("refused"),
        )
    ] == ["ok", "ok", "rate_limited", "rejected", "credentials_refused", "ambiguous", "unreachable"]


def count(platform: str, api: str, result: str) -> float:
    return REQUESTS.labels(platform, api, result)._value.get()


def timed(platform: str, api: str) -> float:
    return SECONDS.labels(platform, api)._sum.get()


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeFeishuOpenAPI, FakeDingTalkOpenAPI]]:
    async with (
        FakeFeishuOpenAPI(app_id=FEISHU.key, app_secret=FEISHU.secret) as feishu,
        FakeDingTalkOpenAPI(
            app_key=DINGTALK.key,
            app_secret=DINGTALK.secret,
            robots={"robot-token-secret": None},
        ) as dingtalk,
    ):
        yield feishu, dingtalk


async def test_a_feishu_send_is_a_client_span_and_counted_by_outcome(
    fakes: tuple[FakeFeishuOpenAPI, FakeDingTalkOpenAPI], recorded_spans: InMemorySpanExporter
) -> None:
    feishu_fake, _ = fakes
    api = "/open-apis/im/v1/messages"
    before_ok, before_rejected = count("feishu", api, "ok"), count("feishu", api, "rejected")
    async with platform_http.client(timeout=5) as http:
        client = FeishuClient(http, base_url=feishu_fake.base_url)
        body = {"receive_id": "oc_1", "msg_type": "text", "content": '{"text": "hi"}'}
        path = "/open-apis/im/v1/messages?receive_id_type=chat_id"
        sent = await client.call(FEISHU, "POST", path, json=body)
        refused = await client.call(FEISHU, "POST", path, json={"receive_id": "oc_1"})
    assert isinstance(sent, Ok)
    assert isinstance(refused, Rejected)
    assert count("feishu", api, "ok") - before_ok == 1
    assert count("feishu", api, "rejected") - before_rejected == 1
    assert timed("feishu", api) > 0

    sends = [s for s in recorded_spans.get_finished_spans() if s.name == f"POST {api}"]
    assert len(sends) == 2
    ok, rejected = sends
    attributes = dict(ok.attributes or {})
    assert ok.kind == SpanKind.CLIENT
    assert attributes["http.request.method"] == "POST"
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["url.path"] == api
    assert attributes["http.response.status_code"] == 200
    assert attributes["zhongshu.outcome"] == "ok"
    assert attributes["zhongshu.platform_message_id"]  # the sent message finds the trace
    assert rejected.status.status_code == StatusCode.ERROR
    assert dict(rejected.attributes or {})["zhongshu.outcome"] == "rejected"
    # The token request is a span of its own, under the send that needed it.
    [token] = [s for s in recorded_spans.get_finished_spans() if "tenant_access_token" in s.name]
    assert token.parent is not None
    assert token.parent.span_id == ok.context.span_id
    assert token.status.status_code != StatusCode.ERROR
    assert dict(token.attributes or {})["zhongshu.outcome"] == "ok"


async def test_no_token_secret_or_query_reaches_a_span(
    fakes: tuple[FakeFeishuOpenAPI, FakeDingTalkOpenAPI], recorded_spans: InMemorySpanExporter
) -> None:
    _, dingtalk_fake = fakes
    async with platform_http.client(timeout=5) as http:
        client = DingTalkClient(
            http, api_url=dingtalk_fake.base_url, oapi_url=dingtalk_fake.base_url
        )
        await client.call_oapi(DINGTALK, "/topapi/v2/user/get", json={"userid": "u1"})
        url = f"{client.oapi_url}/robot/send?access_token=robot-token-secret"
        await client.post_webhook(url, {"msgtype": "text", "text": {"content": "hi"}})
        token = await client.request_oapi_token(DINGTALK)
    assert isinstance(token, Token)
    spans = recorded_spans.get_finished_spans()
    assert {s.name for s in spans} >= {
        "POST /topapi/v2/user/get",
        "GET /gettoken",
        "POST /robot/send",
    }
    for span in spans:
        for key, value in (span.attributes or {}).items():
            text = str(value)
            for secret in (DINGTALK.secret, token.value, "robot-token-secret", "access_token="):
                assert secret not in text, f"{span.name}: {key}={text}"
            assert "?" not in text, f"{span.name}: {key}={text}"
