"""The fake Feishu counts each API's calls per app like the platform (50/s and 1000/min by
default): past either window a call is refused with HTTP 429 / 99991400 and the reset header,
other APIs keep their own quota, and the calls let through are kept with their arrival."""

from __future__ import annotations

import uuid

import httpx

from zhongshu.devstack.fakes.feishu_openapi import FakeFeishuOpenAPI


async def token(http: httpx.AsyncClient, fake: FakeFeishuOpenAPI) -> dict[str, str]:
    answer = await http.post(
        "/open-apis/auth/v3/tenant_access_token/internal",
        json={"app_id": fake.app_id, "app_secret": fake.app_secret},
    )
    return {"Authorization": f"Bearer {answer.json()['tenant_access_token']}"}


def message(chat: str) -> dict[str, str]:
    return {"receive_id": chat, "msg_type": "text", "content": '{"text": "hi"}', "uuid": _id()}


def _id() -> str:
    return uuid.uuid4().hex


async def test_calls_past_an_api_s_quota_are_refused_with_429_and_other_apis_keep_theirs() -> None:
    # A per-minute quota of 3, so the count does not depend on how fast the calls are made.
    async with (
        FakeFeishuOpenAPI(api_limit_per_min=3) as fake,
        httpx.AsyncClient(base_url=fake.base_url, timeout=10) as http,
    ):
        auth = await token(http, fake)
        sends = [
            await http.post(
                "/open-apis/im/v1/messages?receive_id_type=chat_id",
                json=message(f"oc_{i}"),
                headers=auth,
            )
            for i in range(5)
        ]
        parent = fake.user_message("oc_0")
        reply = await http.post(
            f"/open-apis/im/v1/messages/{parent}/reply",
            json={"msg_type": "text", "content": '{"text": "hi"}', "uuid": _id()},
            headers=auth,
        )
    assert [s.status_code for s in sends] == [200, 200, 200, 429, 429]
    refused = sends[-1]
    assert refused.json()["code"] == 99991400
    assert refused.headers["x-ogw-ratelimit-limit"] == "3"
    assert int(refused.headers["x-ogw-ratelimit-reset"]) >= 1
    assert reply.status_code == 200  # replying is another API, with a quota of its own
    assert fake.rate_limit_errors == 2
    assert len(fake.deliveries) == 4
    assert len(fake.api_calls["im.message.create"]) == 3  # refused calls are not counted
    assert len(fake.api_calls["im.message.reply"]) == 1


async def test_cardkit_calls_count_against_their_own_api_s_quota() -> None:
    async with (
        FakeFeishuOpenAPI(api_limit_per_min=1) as fake,
        httpx.AsyncClient(base_url=fake.base_url, timeout=10) as http,
    ):
        auth = await token(http, fake)
        card = '{"schema": "2.0", "config": {"streaming_mode": true}, "body": {"elements": []}}'
        created = [
            await http.post(
                "/open-apis/cardkit/v1/cards",
                json={"type": "card_json", "data": card},
                headers=auth,
            )
            for _ in range(2)
        ]
    assert [c.status_code for c in created] == [200, 429]
    assert len(fake.cards) == 1
    assert fake.rate_limit_errors == 1
