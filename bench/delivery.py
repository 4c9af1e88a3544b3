"""P6, delivery bursts (PERFORMANCE.md): a burst of replies to one DingTalk robot and to one
Feishu chat, and one streamed reply, through the notifier (in this process) to the fake
platforms, which enforce the real limits (DingTalk: 20 messages/min per robot, then a 10-minute
block; Feishu: 5 messages/s per chat; CardKit: 10 operations/s per card).

Figures (value: the notifier; baseline: the same burst sent raw, straight to a fresh fake with
httpx, all at once, in the same run):
  delivery.dingtalk_burst   platform rate-limit errors (target 0), with delivered/sent and the
                            seconds the notifier took to deliver everything it was given
  delivery.feishu_burst     the same for one Feishu chat
  delivery.card_updates     the most card updates in any 1-s window of one streamed reply
                            (target ≤ 5); baseline: chunks published per second

  uv run python bench/delivery.py            # DingTalk burst of 30 (about 2 minutes: the limit)
  uv run python bench/delivery.py --quick    # 22 (about 1 minute)
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

import httpx
import nats
from _common import Deadline, bench_server, figure, log

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts import streams, subjects
from zhongshu.contracts.events import (
    REPLY_HANDLE_DINGTALK_SESSION_WEBHOOK,
    ReplyGenerated,
    ReplyHandle,
)
from zhongshu.devstack import RedisServer, free_port
from zhongshu.devstack.fakes.dingtalk_openapi import FakeDingTalkOpenAPI
from zhongshu.devstack.fakes.feishu_openapi import FakeFeishuOpenAPI
from zhongshu.notifier.main import build_service
from zhongshu.notifier.settings import NotifierSettings
from zhongshu.runtime.hubconfig import HubConfig
from zhongshu.runtime.provision import provision, refused

TENANT = "bench"


def config(dingtalk: FakeDingTalkOpenAPI, feishu: FakeFeishuOpenAPI) -> HubConfig:
    return HubConfig.model_validate(
        {
            "tenants": {TENANT: {}},
            "apps": {
                "ding": {
                    "tenant": TENANT,
                    "platform": "dingtalk",
                    "dingtalk": {
                        "app_key": dingtalk.app_key,
                        "app_secret": dingtalk.app_secret,
                        "robot_code": dingtalk.robot_code,
                    },
                },
                "lark": {
                    "tenant": TENANT,
                    "platform": "feishu",
                    "feishu": {"app_id": feishu.app_id, "app_secret": feishu.app_secret},
                },
            },
        }
    )


async def publish(js: Any, reply: ReplyGenerated, msg_id: str) -> None:
    env = wire.make_envelope(reply, id=msg_id, source="bench", tenant=TENANT)
    await js.publish(
        subjects.chat_reply(reply.platform, TENANT), wire.encode(env), headers={H.MSG_ID: msg_id}
    )


def reply(platform: str, app: str, chat: str, text: str, **fields: Any) -> ReplyGenerated:
    return ReplyGenerated(
        reply_id=uuid.uuid4().hex,
        platform=platform,  # type: ignore[arg-type]
        app=app,
        tenant=TENANT,
        chat_id=chat,
        text=text,
        **fields,
    )


async def wait_for(count: Any, want: int, within_s: float) -> float:
    """Seconds until ``count()`` reaches ``want`` (polled: the fakes count in their handlers)."""
    started = time.monotonic()
    while count() < want and time.monotonic() - started < within_s:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    return time.monotonic() - started


# ---------------------------------------------------------------- raw baselines


async def raw_dingtalk(n: int) -> int:
    """The burst posted straight to the conversation's sessionWebhook."""
    async with FakeDingTalkOpenAPI() as fake:
        url, _ = fake.session_webhook("cid_raw")
        body = {"msgtype": "text", "text": {"content": "hello"}}
        async with httpx.AsyncClient(timeout=10) as http:
            await asyncio.gather(*(http.post(url, json=body) for _ in range(n)))
        return fake.rate_limit_errors


async def raw_feishu(n: int) -> int:
    async with FakeFeishuOpenAPI() as fake:
        async with httpx.AsyncClient(base_url=fake.base_url, timeout=10) as http:
            token = (
                await http.post(
                    "/open-apis/auth/v3/tenant_access_token/internal",
                    json={"app_id": fake.app_id, "app_secret": fake.app_secret},
                )
            ).json()["tenant_access_token"]
            body = {"receive_id": "oc_raw", "msg_type": "text", "content": '{"text": "hi"}'}
            await asyncio.gather(
                *(
                    http.post(
                        "/open-apis/im/v1/messages?receive_id_type=chat_id",
                        json={**body, "uuid": uuid.uuid4().hex},
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    for _ in range(n)
                )
            )
        return fake.rate_limit_errors


# ---------------------------------------------------------------- the notifier


async def run(args: Any) -> None:
    deadline = Deadline(args.deadline)
    burst = 22 if args.quick else 30
    feishu_burst = 40
    chunks, chunk_rate = 60, 30.0
    with bench_server(args.sync, name="delivery") as (server, scratch):
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        outcomes = await provision(js, streams.STREAMS, streams.KV_BUCKETS)
        if refused(outcomes):
            raise RuntimeError(f"provisioning refused: {refused(outcomes)}")
        redis = RedisServer(scratch / "redis", port=free_port()).start()
        dingtalk, feishu = FakeDingTalkOpenAPI(), FakeFeishuOpenAPI()
        await dingtalk.start()
        await feishu.start()
        service = build_service(config=config(dingtalk, feishu))
        try:
            await service.start(
                NotifierSettings(
                    nats_url=server.url,
                    redis_url=redis.url,
                    FEISHU_BASE_URL=feishu.base_url,
                    DINGTALK_API_URL=dingtalk.base_url,
                    DINGTALK_OAPI_URL=dingtalk.base_url,
                )
            )
            log(f"P6: {burst} replies at once to one DingTalk robot (limit 20/min)")
            url, expires = dingtalk.session_webhook("cid_bench")
            handle = ReplyHandle(
                kind=REPLY_HANDLE_DINGTALK_SESSION_WEBHOOK, url=url, expires_at=expires
            )
            for i in range(burst):
                answer = reply("dingtalk", "ding", "cid_bench", f"reply {i}", reply_handle=handle)
                await publish(js, answer, f"d{i}")
            took = await wait_for(lambda: len(dingtalk.deliveries), burst, deadline.remaining())
            raw_errors = await raw_dingtalk(burst)
            figure(
                "delivery.dingtalk_burst",
                dingtalk.rate_limit_errors,
                "rate-limit errors",
                raw_errors,
                0.0 if raw_errors else float("nan"),
                sync=args.sync,
                delivered=len(dingtalk.deliveries),
                sent=burst,
                seconds=took,
                target="0 platform rate-limit errors",
                met=dingtalk.rate_limit_errors == 0 and len(dingtalk.deliveries) == burst,
            )
            deadline.check("the Feishu burst")
            log(f"P6: {feishu_burst} replies at once to one Feishu chat (limit 5/s)")
            for i in range(feishu_burst):
                await publish(js, reply("feishu", "lark", "oc_bench", f"reply {i}"), f"f{i}")
            took = await wait_for(lambda: len(feishu.deliveries), feishu_burst, 120)
            raw_errors = await raw_feishu(feishu_burst)
            figure(
                "delivery.feishu_burst",
                feishu.rate_limit_errors,
                "rate-limit errors",
                raw_errors,
                0.0 if raw_errors else float("nan"),
                sync=args.sync,
                delivered=len(feishu.deliveries),
                sent=feishu_burst,
                seconds=took,
                target="0 platform rate-limit errors",
                met=feishu.rate_limit_errors == 0 and len(feishu.deliveries) == feishu_burst,
            )
            log(f"P6: one reply streamed in {chunks} chunks at {chunk_rate:.0f}/s")
            stream_id = uuid.uuid4().hex
            text = ""
            for i in range(1, chunks + 1):
                text += f"word{i} "
                chunk = reply(
                    "feishu",
                    "lark",
                    "oc_stream",
                    text,
                    chunk_index=i,
                    final=False,
                    stream_id=stream_id,
                )
                chunk = ReplyGenerated(**{**_fields(chunk), "reply_id": stream_id})
                await publish(js, chunk, f"s{i}")
                await asyncio.sleep(1 / chunk_rate)
            final = ReplyGenerated(
                **{
                    **_fields(reply("feishu", "lark", "oc_stream", text)),
                    "reply_id": stream_id,
                    "chunk_index": chunks + 1,
                    "final": True,
                    "stream_id": stream_id,
                }
            )
            await publish(js, final, "s-final")
            await wait_for(lambda: any(not c.streaming for c in feishu.cards.values()), 1, 60)
            updates = [
                when
                for card in feishu.cards.values()
                for when, _, what in card.ops
                if what.startswith("content")
            ]
            figure(
                "delivery.card_updates",
                max_in_window(updates, 1.0),
                "updates/s (max)",
                chunk_rate,
                max_in_window(updates, 1.0) / chunk_rate,
                sync=args.sync,
                updates=len(updates),
                chunks=chunks,
                finished=sum(1 for c in feishu.cards.values() if not c.streaming),
                target="<= 5 updates per second per card",
                met=max_in_window(updates, 1.0) <= 5,
            )
        finally:
            await service.stop()
            await dingtalk.stop()
            await feishu.stop()
            await nc.close()
            redis.stop()


def _fields(reply: ReplyGenerated) -> dict[str, Any]:
    return {f: getattr(reply, f) for f in reply.__struct_fields__}


def max_in_window(times: list[float], window_s: float) -> int:
    times = sorted(times)
    most, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= window_s:
            start += 1
        most = max(most, end - start + 1)
    return most


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sync", choices=("always", "default"), default="always")
    parser.add_argument("--deadline", type=float, default=10 * 60)
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
