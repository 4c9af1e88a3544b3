"""P6, delivery bursts (PERFORMANCE.md): bursts through the notifier (in this process, 50
replies in flight) to the fake platforms, which enforce the real limits (Feishu: 50 calls/s and
1000/min per API per app, 5 messages/s per chat, CardKit 10 operations/s per card; DingTalk: 20
messages/min per robot and per session, then a 10-minute block).

Figures (value: the notifier; baseline: the same burst sent raw, straight to a fresh fake with
httpx, 50 in flight, in the same run):
  delivery.feishu_app_burst     200 replies to 200 chats from one app: platform rate-limit errors
                                (target 0), delivered/sent, and the send API's achieved calls/s
                                against the app's 50/s once the first second's calls are out
                                (``paced_rate``)
  delivery.feishu_stream_burst  200 streamed answers (3 chunks and the final) to 200 chats:
                                rate-limit errors over every CardKit call and the sends showing
                                the cards, cards finished, each API's achieved calls/s
  delivery.feishu_burst         40 replies to one Feishu chat (5/s)
  delivery.card_updates         the most card updates in any 1-s window of one streamed reply
                                (target <= 5); baseline: chunks published per second
  delivery.dingtalk_burst       30 replies to one DingTalk conversation's sessionWebhook and 30
                                alerts to one custom robot, side by side (20/min each)

  uv run python bench/delivery.py          # DingTalk at its real 60-s window (about 2 minutes)
  uv run python bench/delivery.py --quick  # DingTalk's window scaled to 6 s (the notifier's too)
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx
import nats
from _common import Deadline, bench_server, figure, log, safe_ratio

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts import streams, subjects
from zhongshu.contracts.events import (
    REPLY_HANDLE_DINGTALK_SESSION_WEBHOOK,
    AlertRaised,
    ReplyGenerated,
    ReplyHandle,
)
from zhongshu.devstack import RedisServer, free_port
from zhongshu.devstack.fakes.dingtalk_openapi import FakeDingTalkOpenAPI
from zhongshu.devstack.fakes.feishu_openapi import FakeFeishuOpenAPI, StreamingCard
from zhongshu.notifier.main import build_service
from zhongshu.notifier.settings import NotifierSettings
from zhongshu.runtime.hubconfig import HubConfig
from zhongshu.runtime.provision import provision, refused

TENANT = "bench"
IN_FLIGHT = 50
APP_BURST = 200
FEISHU_PER_S = 50  # per API per app, the fake's default like the platform's
ROBOT_TOKEN = "bench-robot"
SEND_API = "im.message.create"
CARDKIT_APIS = ("cardkit.card.create", "cardkit.card.element.content", "cardkit.card.settings")
STREAM_CHUNKS = 4  # three updates and the final text


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
            "alerts": {"warning": [{"dingtalk_robot": ROBOT_TOKEN}]},
        }
    )


async def publish(js: Any, reply: ReplyGenerated, msg_id: str) -> None:
    env = wire.make_envelope(reply, id=msg_id, source="bench", tenant=TENANT)
    await js.publish(
        subjects.chat_reply(reply.platform, TENANT), wire.encode(env), headers={H.MSG_ID: msg_id}
    )


async def raise_alert(js: Any, alert: AlertRaised) -> None:
    env = wire.make_envelope(alert, id=uuid.uuid4().hex, source="bench", tenant="")
    await js.publish(
        subjects.alert(alert.level, alert.source), wire.encode(env), headers={H.MSG_ID: env.id}
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


def streamed(chat: str) -> list[ReplyGenerated]:
    """One answer's chunks, each with the whole text so far, the last one final."""
    reply_id = uuid.uuid4().hex
    words = [f"{chat}-{n}" for n in range(STREAM_CHUNKS)]
    return [
        ReplyGenerated(
            reply_id=reply_id,
            platform="feishu",
            app="lark",
            tenant=TENANT,
            chat_id=chat,
            text=" ".join(words[: n + 1]),
            chunk_index=n,
            final=n == STREAM_CHUNKS - 1,
            stream_id=reply_id,
        )
        for n in range(STREAM_CHUNKS)
    ]


async def wait_for(count: Any, want: int, within_s: float) -> float:
    """Seconds until ``count()`` reaches ``want`` (polled: the fakes count in their handlers)."""
    started = time.monotonic()
    while count() < want and time.monotonic() - started < within_s:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def paced_rate(times: Sequence[float], window_s: float) -> float:
    """Calls per second once the first window's burst is out: the calls after the first
    window's ÷ the time from the first window's last call to the last call. Each window's calls
    follow the first's by the time a slot takes to come back, so a pacer holding exactly
    ``limit`` per window scores ``limit / window_s``; what it loses per window (the time from
    taking a slot to the platform's answer, and waking up) shows as less."""
    if not times:
        return float("nan")
    ordered = sorted(times)
    first = [t for t in ordered if t < ordered[0] + window_s]
    span = ordered[-1] - first[-1]
    return (len(ordered) - len(first)) / span if span > 0 else float("nan")


def max_in_window(times: Sequence[float], window_s: float) -> int:
    times = sorted(times)
    most, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= window_s:
            start += 1
        most = max(most, end - start + 1)
    return most


async def bounded(calls: Sequence[Callable[[], Awaitable[Any]]], in_flight: int) -> float:
    """Run the calls ``in_flight`` at a time, as fast as they go; the seconds it took."""
    gate = asyncio.Semaphore(in_flight)

    async def one(call: Callable[[], Awaitable[Any]]) -> None:
        async with gate:
            await call()

    started = time.monotonic()
    await asyncio.gather(*(one(c) for c in calls))
    return time.monotonic() - started


# ---------------------------------------------------------------- raw baselines


async def raw_dingtalk(n: int, window_s: float) -> tuple[int, int]:
    """The burst posted straight to a sessionWebhook and to a custom robot, side by side:
    (rate-limit errors, deliveries)."""
    fake = FakeDingTalkOpenAPI(robots={ROBOT_TOKEN: None}, robot_window_s=window_s)
    async with fake, httpx.AsyncClient(timeout=10) as http:
        url, _ = fake.session_webhook("cid_raw")
        robot = f"{fake.base_url}/robot/send?access_token={ROBOT_TOKEN}"
        body = {"msgtype": "text", "text": {"content": "hello"}}
        calls = [lambda: http.post(url, json=body) for _ in range(n)]
        calls += [lambda: http.post(robot, json=body) for _ in range(n)]
        await bounded(calls, IN_FLIGHT)
        return fake.rate_limit_errors, len(fake.deliveries)


async def feishu_token(http: httpx.AsyncClient, fake: FakeFeishuOpenAPI) -> dict[str, str]:
    answer = await http.post(
        "/open-apis/auth/v3/tenant_access_token/internal",
        json={"app_id": fake.app_id, "app_secret": fake.app_secret},
    )
    return {"Authorization": f"Bearer {answer.json()['tenant_access_token']}"}


def text_message(chat: str) -> dict[str, str]:
    return {
        "receive_id": chat,
        "msg_type": "text",
        "content": '{"text": "hi"}',
        "uuid": uuid.uuid4().hex,
    }


async def raw_feishu(chats: Sequence[str]) -> dict[str, Any]:
    """One text message to each chat, straight, ``IN_FLIGHT`` at a time."""
    fake = FakeFeishuOpenAPI()
    async with fake, httpx.AsyncClient(base_url=fake.base_url, timeout=10) as http:
        auth = await feishu_token(http, fake)
        path = "/open-apis/im/v1/messages?receive_id_type=chat_id"

        def send(chat: str) -> Callable[[], Awaitable[Any]]:
            return lambda: http.post(path, json=text_message(chat), headers=auth)

        took = await bounded([send(chat) for chat in chats], IN_FLIGHT)
        return {
            "errors": fake.rate_limit_errors,
            "delivered": len(fake.deliveries),
            "offered_per_s": len(chats) / took,
        }


async def raw_feishu_streams(chats: Sequence[str]) -> dict[str, Any]:
    """Each chat's answer streamed straight: create the card, show it, write the text
    ``STREAM_CHUNKS`` times, close the stream; ``IN_FLIGHT`` answers at a time."""
    fake = FakeFeishuOpenAPI()
    async with fake, httpx.AsyncClient(base_url=fake.base_url, timeout=10) as http:
        auth = await feishu_token(http, fake)
        card = (
            '{"schema": "2.0", "config": {"streaming_mode": true}, "body": {"elements": '
            '[{"tag": "markdown", "element_id": "md", "content": ""}]}}'
        )

        async def answer(chat: str) -> None:
            created = await http.post(
                "/open-apis/cardkit/v1/cards",
                json={"type": "card_json", "data": card},
                headers=auth,
            )
            card_id = created.json().get("data", {}).get("card_id")
            if card_id is None:
                return
            show = {
                **text_message(chat),
                "msg_type": "interactive",
                "content": f'{{"type": "card", "data": {{"card_id": "{card_id}"}}}}',
            }
            await http.post(
                "/open-apis/im/v1/messages?receive_id_type=chat_id", json=show, headers=auth
            )
            base = f"/open-apis/cardkit/v1/cards/{card_id}"
            for seq in range(1, STREAM_CHUNKS + 1):
                await http.put(
                    f"{base}/elements/md/content",
                    json={"content": f"text {seq}", "sequence": seq},
                    headers=auth,
                )
            settings = '{"config": {"streaming_mode": false}}'
            await http.patch(
                f"{base}/settings",
                json={"settings": settings, "sequence": STREAM_CHUNKS + 1},
                headers=auth,
            )

        def one(chat: str) -> Callable[[], Awaitable[None]]:
            return lambda: answer(chat)

        took = await bounded([one(chat) for chat in chats], IN_FLIGHT)
        calls = sum(len(fake.api_calls[api]) for api in (*CARDKIT_APIS, SEND_API))
        return {
            "errors": fake.rate_limit_errors,
            "finished": sum(1 for c in fake.cards.values() if not c.streaming),
            "offered_per_s": (calls + fake.rate_limit_errors) / took,
        }


# ---------------------------------------------------------------- the notifier's phases


async def feishu_app_burst(js: Any, feishu: FakeFeishuOpenAPI, args: Any) -> None:
    log(f"P6: {APP_BURST} replies to {APP_BURST} chats from one Feishu app, {IN_FLIGHT} in flight")
    chats = [f"oc_app_{i}" for i in range(APP_BURST)]
    errors_before, calls_before = feishu.rate_limit_errors, len(feishu.api_calls[SEND_API])
    delivered_before = len(feishu.deliveries)
    answers = [reply("feishu", "lark", chat, f"answer for {chat}") for chat in chats]
    for answer in answers:
        await publish(js, answer, answer.reply_id)
    took = await wait_for(lambda: len(feishu.deliveries) - delivered_before, APP_BURST, 120)
    sends = feishu.api_calls[SEND_API][calls_before:]
    errors = feishu.rate_limit_errors - errors_before
    once = Counter(d.uuid for d in feishu.deliveries[delivered_before:])
    raw = await raw_feishu(chats)
    rate = paced_rate(sends, 1.0)
    figure(
        "delivery.feishu_app_burst",
        errors,
        "rate-limit errors",
        raw["errors"],
        0.0 if raw["errors"] else float("nan"),
        sync=args.sync,
        delivered=sum(once.values()),
        sent=APP_BURST,
        delivered_twice=sum(1 for n in once.values() if n > 1),
        seconds=took,
        calls_per_s=rate,
        limit_per_s=FEISHU_PER_S,
        of_limit=safe_ratio(rate, FEISHU_PER_S),
        max_in_1s=max_in_window(sends, 1.0),
        baseline_delivered=raw["delivered"],
        baseline_offered_per_s=raw["offered_per_s"],
        target="0 platform rate-limit errors, >= 90 % of the limit",
        met=errors == 0 and len(once) == APP_BURST and safe_ratio(rate, FEISHU_PER_S) >= 0.9,
    )


async def feishu_stream_burst(js: Any, feishu: FakeFeishuOpenAPI, args: Any) -> None:
    n = APP_BURST
    log(f"P6: {n} streamed answers ({STREAM_CHUNKS} chunks each) to {n} chats from one app")
    chats = [f"oc_stream_{i}" for i in range(n)]
    apis = (*CARDKIT_APIS, SEND_API)
    errors_before = feishu.rate_limit_errors
    calls_before = {api: len(feishu.api_calls[api]) for api in apis}
    delivered_before = len(feishu.deliveries)
    answers = [streamed(chat) for chat in chats]
    started = time.monotonic()
    for index in range(STREAM_CHUNKS):  # the answers stream side by side, chunk by chunk
        for chunks in answers:
            await publish(js, chunks[index], f"{chunks[index].reply_id}:{index}")
    settings_api = "cardkit.card.settings"
    took = await wait_for(
        lambda: len(feishu.api_calls[settings_api]) - calls_before[settings_api], n, 180
    )
    took = max(took, time.monotonic() - started)
    calls = {api: feishu.api_calls[api][calls_before[api] :] for api in apis}
    shown = Counter(d.uuid for d in feishu.deliveries[delivered_before:])
    finals = {a[-1].reply_id: a[-1].text for a in answers}
    finished = sum(
        1
        for d in feishu.deliveries[delivered_before:]
        if (card := feishu.cards.get(d.content.get("data", {}).get("card_id", "")))
        and not card.streaming
        and list(card.elements.values()) == [finals.get(str(d.uuid))]
    )
    errors = feishu.rate_limit_errors - errors_before
    raw = await raw_feishu_streams(chats)
    rates = {api: paced_rate(times, 1.0) for api, times in calls.items()}
    figure(
        "delivery.feishu_stream_burst",
        errors,
        "rate-limit errors",
        raw["errors"],
        0.0 if raw["errors"] else float("nan"),
        sync=args.sync,
        finished=finished,
        sent=n,
        shown_twice=sum(1 for c in shown.values() if c > 1),
        seconds=took,
        calls={api: len(times) for api, times in calls.items()},
        calls_per_s=rates,
        max_in_1s={api: max_in_window(times, 1.0) for api, times in calls.items()},
        limit_per_s=FEISHU_PER_S,
        baseline_finished=raw["finished"],
        baseline_offered_per_s=raw["offered_per_s"],
        target="0 platform rate-limit errors, every card finished with its final text",
        met=errors == 0 and finished == n,
    )


async def dingtalk_bursts(
    js: Any, dingtalk: FakeDingTalkOpenAPI, burst: int, window_s: float, args: Any
) -> None:
    log(
        f"P6: {burst} replies to one DingTalk sessionWebhook and {burst} alerts to one custom "
        f"robot, side by side (limit 20 per {window_s:.0f} s each)"
    )
    url, expires = dingtalk.session_webhook("cid_bench")
    handle = ReplyHandle(kind=REPLY_HANDLE_DINGTALK_SESSION_WEBHOOK, url=url, expires_at=expires)
    run = uuid.uuid4().hex
    for i in range(burst):
        answer = reply("dingtalk", "ding", "cid_bench", f"reply {i}", reply_handle=handle)
        await publish(js, answer, f"d{i}")
        alert = AlertRaised(
            level="warning", source="bench", title=f"alert {i}", dedupe_key=f"{run}-{i}"
        )
        await raise_alert(js, alert)
    took = await wait_for(lambda: len(dingtalk.deliveries), 2 * burst, 6 * window_s)
    raw_errors, raw_delivered = await raw_dingtalk(burst, window_s)
    per_path = {
        path: [d.at for d in dingtalk.deliveries if d.channel == path]
        for path in ("session", "robot")
    }
    figure(
        "delivery.dingtalk_burst",
        dingtalk.rate_limit_errors,
        "rate-limit errors",
        raw_errors,
        0.0 if raw_errors else float("nan"),
        sync=args.sync,
        delivered={path: len(times) for path, times in per_path.items()},
        sent={"session": burst, "robot": burst},
        seconds=took,
        window_s=window_s,
        limit_per_window=20,
        paced_per_window=18,  # the notifier's default: DingTalk blocks for 10 minutes
        max_in_window={path: max_in_window(t, window_s) for path, t in per_path.items()},
        baseline_delivered=raw_delivered,
        target="0 platform rate-limit errors",
        met=dingtalk.rate_limit_errors == 0 and len(dingtalk.deliveries) == 2 * burst,
    )


async def feishu_chat_burst(js: Any, feishu: FakeFeishuOpenAPI, args: Any) -> None:
    n = 40
    log(f"P6: {n} replies at once to one Feishu chat (limit 5/s)")
    errors_before, delivered_before = feishu.rate_limit_errors, len(feishu.deliveries)
    for i in range(n):
        await publish(js, reply("feishu", "lark", "oc_bench", f"reply {i}"), f"f{i}")
    took = await wait_for(lambda: len(feishu.deliveries) - delivered_before, n, 120)
    raw = await raw_feishu(["oc_raw"] * n)
    errors = feishu.rate_limit_errors - errors_before
    figure(
        "delivery.feishu_burst",
        errors,
        "rate-limit errors",
        raw["errors"],
        0.0 if raw["errors"] else float("nan"),
        sync=args.sync,
        delivered=len(feishu.deliveries) - delivered_before,
        sent=n,
        seconds=took,
        target="0 platform rate-limit errors",
        met=errors == 0 and len(feishu.deliveries) - delivered_before == n,
    )


async def card_updates(js: Any, feishu: FakeFeishuOpenAPI, args: Any) -> None:
    chunks, chunk_rate = 60, 30.0
    log(f"P6: one reply streamed in {chunks} chunks at {chunk_rate:.0f}/s")
    stream_id = uuid.uuid4().hex
    cards_before = set(feishu.cards)
    text = ""
    for i in range(1, chunks + 2):
        text += f"word{i} "
        chunk = ReplyGenerated(
            reply_id=stream_id,
            platform="feishu",
            app="lark",
            tenant=TENANT,
            chat_id="oc_stream",
            text=text,
            chunk_index=i,
            final=i == chunks + 1,
            stream_id=stream_id,
        )
        await publish(js, chunk, f"s{i}")
        await asyncio.sleep(1 / chunk_rate)

    def new() -> list[StreamingCard]:
        return [card for i, card in feishu.cards.items() if i not in cards_before]

    await wait_for(lambda: sum(1 for c in new() if not c.streaming), 1, 60)
    updates = [when for card in new() for when, _, what in card.ops if what == "content"]
    figure(
        "delivery.card_updates",
        max_in_window(updates, 1.0),
        "updates/s (max)",
        chunk_rate,
        max_in_window(updates, 1.0) / chunk_rate,
        sync=args.sync,
        updates=len(updates),
        chunks=chunks,
        target="<= 5 updates per second per card",
        met=max_in_window(updates, 1.0) <= 5,
    )


async def run(args: Any) -> None:
    deadline = Deadline(args.deadline)
    window_s = 6.0 if args.quick else 60.0
    burst = 30
    with bench_server(args.sync, name="delivery") as (server, scratch):
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        outcomes = await provision(js, streams.STREAMS, streams.KV_BUCKETS)
        if refused(outcomes):
            raise RuntimeError(f"provisioning refused: {refused(outcomes)}")
        redis = RedisServer(scratch / "redis", port=free_port()).start()
        dingtalk = FakeDingTalkOpenAPI(
            robots={ROBOT_TOKEN: None}, robot_window_s=window_s, block_s=10 * window_s
        )
        feishu = FakeFeishuOpenAPI()
        await dingtalk.start()
        await feishu.start()
        service = build_service(config=config(dingtalk, feishu), concurrency=IN_FLIGHT)
        try:
            await service.start(
                NotifierSettings(
                    nats_url=server.url,
                    redis_url=redis.url,
                    feishu_base_url=feishu.base_url,
                    dingtalk_api_url=dingtalk.base_url,
                    dingtalk_oapi_url=dingtalk.base_url,
                    dingtalk_robot_window_s=window_s,
                )
            )
            await feishu_app_burst(js, feishu, args)
            deadline.check("the streamed burst")
            await feishu_stream_burst(js, feishu, args)
            deadline.check("the Feishu chat burst")
            await feishu_chat_burst(js, feishu, args)
            deadline.check("the card updates")
            await card_updates(js, feishu, args)
            deadline.check("the DingTalk bursts")
            await dingtalk_bursts(js, dingtalk, burst, window_s, args)
        finally:
            await service.stop()
            await dingtalk.stop()
            await feishu.stop()
            await nc.close()
            redis.stop()


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
