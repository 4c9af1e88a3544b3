"""kill -9 of a notifier process in the middle of a 500-reply burst, then a restart: every reply
reaches its chat exactly once. Feishu sends caught mid-flight are resent with the same uuid
(the platform drops the copy); DingTalk sends caught mid-flight are never resent: they are
reported ambiguous and counted apart (at most once, never twice)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import signal
import sys
from pathlib import Path

import pytest
import yaml

from services.notifier.tests.notifier_testing import Bus, Platforms, dingtalk_session_reply
from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts import streams, subjects
from zhongshu.contracts.events import ReplyGenerated
from zhongshu.contracts.events.chat import (
    REPLY_HANDLE_FEISHU_MESSAGE,
    ReplyHandle,
)
from zhongshu.devstack.fakes.base_openapi import SlidingWindow
from zhongshu.devstack.testing import collect, drained

PER_PLATFORM = 250


class NotifierProcess:
    """``python -m zhongshu.notifier.main``, its stderr read by a task."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.ready = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, env: dict[str, str]) -> NotifierProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "zhongshu.notifier.main",
            env={**os.environ, **env},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        process = cls(proc)
        try:
            await asyncio.wait_for(process.ready.wait(), 30)
        except TimeoutError:
            process.proc.kill()
            text = "".join(process.lines[-30:])
            raise AssertionError("notifier did not start:\n" + text) from None
        return process

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            line = raw.decode(errors="replace")
            self.lines.append(line)
            if re.match(r"READY notifier", line):
                self.ready.set()

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


def burst(platforms: Platforms) -> list[ReplyGenerated]:
    """Feishu and DingTalk replies interleaved, spread over chats."""
    replies = []
    for i in range(PER_PLATFORM):
        chat = f"oc_chat_{i % 50}"
        replies.append(
            ReplyGenerated(
                reply_id=f"fs-{i}",
                platform="feishu",
                app="lark",
                tenant="acme",
                chat_id=chat,
                reply_handle=ReplyHandle(
                    kind=REPLY_HANDLE_FEISHU_MESSAGE,
                    message_id=platforms.feishu.user_message(chat),
                    chat_id=chat,
                ),
                text=f"fs-{i}",
            )
        )
    for i in range(PER_PLATFORM):
        conversation = f"cid-conv-{i % 25}"
        replies.append(dingtalk_session_reply(platforms, conversation, f"dt-{i}", text=f"dt-{i}"))
    half = len(replies) // 2
    return [r for pair in zip(replies[:half], replies[half:], strict=True) for r in pair]


@pytest.mark.slow
async def test_kill_9_mid_burst_then_restart_delivers_every_reply_exactly_once(
    bus: Bus, platforms: Platforms, redis_url: str, tmp_path: Path
) -> None:
    # DingTalk's 20/min scaled to 20 per second on both sides (the notifier keeps 18).
    platforms.dingtalk.robot_limit = SlidingWindow(20, 1.0)
    platforms.dingtalk.answer_delay_s = platforms.feishu.answer_delay_s = 0.05
    config = tmp_path / "zhongshu.yaml"
    config.write_text(yaml.safe_dump(platforms.config_dict()))
    env = {
        "ZHONGSHU_NATS_URL": bus.url,
        "ZHONGSHU_REDIS_URL": redis_url,
        "ZHONGSHU_CONFIG": str(config),
        "ZHONGSHU_HEALTH_PORT": "0",
        "ZHONGSHU_ACK_WAIT_S": "2",
        "ZHONGSHU_DINGTALK_ROBOT_WINDOW_S": "1",
        "FEISHU_BASE_URL": platforms.feishu.base_url,
        "DINGTALK_API_URL": platforms.dingtalk.base_url,
        "DINGTALK_OAPI_URL": platforms.dingtalk.base_url,
    }
    replies = burst(platforms)
    for reply in replies:
        envelope = wire.make_envelope(
            reply, id=f"in-{reply.reply_id}", source="test", tenant="acme"
        )
        await bus.js.publish(
            subjects.chat_reply(reply.platform, "acme"),
            wire.encode(envelope),
            headers={H.MSG_ID: envelope.id},
        )

    def sent() -> int:
        return len(platforms.feishu.deliveries) + len(platforms.dingtalk.deliveries)

    first = await NotifierProcess.start(env)
    try:
        await platforms.feishu.wait_until(lambda: sent() >= 150, 60)
    finally:
        await first.kill()
    killed_at = sent()
    assert killed_at < len(replies), "the burst finished before the kill"

    platforms.dingtalk.answer_delay_s = platforms.feishu.answer_delay_s = 0
    second = await NotifierProcess.start(env)
    try:
        outcomes = await collect(bus.js, subjects.ALL_DELIVERIES, count=len(replies), within_s=120)
        await drained(bus.js, streams.REPLIES.name, "notifier-replies", within_s=60)
    finally:
        await second.kill()

    by_reply = collections.defaultdict(list)
    for msg in outcomes:
        event = wire.decode_any(msg.data).data
        by_reply[event.reply_id].append(msg.subject.split(".")[1])
    assert sorted(by_reply) == sorted(r.reply_id for r in replies), "a reply has no outcome"
    assert all(len(states) == 1 for states in by_reply.values()), "an outcome was duplicated"

    feishu_sent = collections.Counter(d.uuid for d in platforms.feishu.deliveries)
    dingtalk_sent = collections.Counter(d.text for d in platforms.dingtalk.deliveries)
    # Feishu: exactly once each, whatever the crash caught.
    assert feishu_sent == {f"fs-{i}": 1 for i in range(PER_PLATFORM)}
    assert all(by_reply[f"fs-{i}"] == ["delivered"] for i in range(PER_PLATFORM))
    # DingTalk: never twice; what the crash caught mid-send is ambiguous, not resent.
    assert max(dingtalk_sent.values()) == 1
    ambiguous = [r for r, states in by_reply.items() if states == ["ambiguous"]]
    for i in range(PER_PLATFORM):
        if by_reply[f"dt-{i}"] == ["delivered"]:
            assert dingtalk_sent[f"dt-{i}"] == 1
        else:
            assert by_reply[f"dt-{i}"] == ["ambiguous"]
    lost = [r for r in ambiguous if dingtalk_sent[r] == 0]
    assert platforms.dingtalk.rate_limit_errors == 0
    assert platforms.feishu.rate_limit_errors == 0
    print(
        f"killed after {killed_at} sends; feishu resends dropped by uuid: "
        f"{platforms.feishu.deduplicated}; dingtalk ambiguous: {len(ambiguous)} "
        f"(of which never arrived: {len(lost)})"
    )
