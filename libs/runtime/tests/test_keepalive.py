"""``Delivery.keepalive``: a step that outlasts a third of ``ack_wait`` tells JetStream it is
still working, every third; a short step sends nothing; nothing is sent after the step; a failed
beat does not end the step. (The long-handler case on a real server is in
test_consumer_loop.py.)"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from nats.aio.msg import Msg

from zhongshu.runtime.consumer import Delivery


class CountingMessage:
    """Stands in for the delivered message: counts ``in_progress``; can fail the first one."""

    subject = "chat.reply.feishu.t1"

    def __init__(self, *, fail_first: bool = False) -> None:
        self.beats = 0
        self._fail_first = fail_first
        self._beaten = asyncio.Event()

    async def wait_beats(self, count: int) -> None:
        async with asyncio.timeout(10):
            while self.beats < count:
                self._beaten.clear()
                await self._beaten.wait()

    async def in_progress(self) -> None:
        self.beats += 1
        self._beaten.set()
        if self._fail_first and self.beats == 1:
            raise ConnectionError("connection closed")


def delivery(message: CountingMessage, ack_wait_s: float) -> Delivery:
    return Delivery(cast(Msg, message), publisher=cast(Any, None), ack_wait_s=ack_wait_s)


async def test_a_step_shorter_than_a_third_of_ack_wait_sends_no_beat() -> None:
    message = CountingMessage()
    async with delivery(message, ack_wait_s=30).keepalive():
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)
    assert message.beats == 0


async def test_a_long_step_beats_every_third_of_ack_wait_and_stops_with_the_step() -> None:
    message = CountingMessage()
    async with delivery(message, ack_wait_s=0.15).keepalive():
        await message.wait_beats(3)
    after = message.beats
    await asyncio.sleep(0.2)
    assert message.beats == after


async def test_a_failed_beat_is_logged_and_the_next_one_comes() -> None:
    message = CountingMessage(fail_first=True)
    async with delivery(message, ack_wait_s=0.15).keepalive():
        await message.wait_beats(2)
    assert message.beats >= 2
