"""Echo as a real process on a real nats-server: what the runtime promises every service.

SIGKILL mid-batch loses nothing and publishes no duplicate; SIGTERM drains in-flight work;
bad settings and an unreachable bus stop start-up with a readable message; health, metrics and
trace context work end to end."""

from __future__ import annotations

import asyncio
import http.server
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import nats
import pytest
from nats.js.client import JetStreamContext

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts import streams, subjects
from zhongshu.contracts.events import MessageReceived
from zhongshu.contracts.examples import example
from zhongshu.contracts.ids import derive_msg_id
from zhongshu.devstack import NatsServer, free_port
from zhongshu.devstack.testing import collect, eventually, provision_all

TENANT = "acme"


class EchoProcess:
    """``python -m zhongshu.echo.main`` with its stderr collected by a thread."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "zhongshu.echo.main"],
            env={**os.environ, **env},
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.health_port = 0
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            match = re.match(r"READY echo health_port=(\d+)", line)
            if match:
                self.health_port = int(match.group(1))
                self.ready.set()

    def wait_ready(self, timeout: float = 30) -> EchoProcess:
        if not self.ready.wait(timeout):
            self.proc.kill()
            raise AssertionError("echo did not start:\n" + "".join(self.lines[-20:]))
        return self

    def wait(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    with NatsServer(tmp_path / "nats") as nats_server:
        asyncio.run(provision_all(nats_server.url))
        yield nats_server


def echo_env(url: str, **extra: str) -> dict[str, str]:
    return {"ZHONGSHU_NATS_URL": url, "ZHONGSHU_ACK_WAIT_S": "2", **extra}


async def publish_inbound(
    js: JetStreamContext, count: int, headers: dict[str, str] | None = None
) -> list[str]:
    ids = [f"in-{i}" for i in range(count)]
    base = example(MessageReceived)
    subject = subjects.chat_inbound("feishu", TENANT)
    for start in range(0, count, 500):
        futures = []
        for i in range(start, min(count, start + 500)):
            event = msgspec.structs.replace(base, tenant=TENANT, text=f"m{i}")
            env = wire.make_envelope(event, id=ids[i], source="test", tenant=TENANT)
            futures.append(
                await js.publish_async(
                    subject, wire.encode(env), headers={H.MSG_ID: env.id, **(headers or {})}
                )
            )
        await asyncio.gather(*futures)
    return ids


async def reply_count(js: JetStreamContext) -> int:
    info = await js.stream_info(streams.REPLIES.name)
    return int(info.state.messages)


async def test_sigkill_mid_batch_loses_nothing_and_duplicates_nothing(server: NatsServer) -> None:
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    count = 3000
    ids = await publish_inbound(js, count)
    # Pretend work so the kill lands in the middle of a batch.
    echo = EchoProcess(echo_env(server.url, ZHONGSHU_ECHO_DELAY_S="0.002")).wait_ready()
    try:
        await eventually(lambda: _at_least(js, 400), f"{400} replies", 60)
        echo.proc.send_signal(signal.SIGKILL)
        echo.wait()
        killed_at = await reply_count(js)
        assert killed_at < count, "the worker finished before it was killed"
        echo = EchoProcess(echo_env(server.url)).wait_ready()
        await eventually(lambda: _at_least(js, count), f"{count} replies", 60)
        await asyncio.sleep(3)  # anything duplicated would arrive after the last redelivery
        replies = await collect(
            js, subjects.chat_reply("feishu", TENANT), count=count + 1, within_s=5
        )
        reply_ids = [(m.header or {})[H.MSG_ID] for m in replies]
        assert len(reply_ids) == count
        assert sorted(reply_ids) == sorted(derive_msg_id(i, "echo") for i in ids)
        info = await js.consumer_info(streams.CHAT_INBOUND.name, "echo")
        assert info.num_pending == 0
    finally:
        echo.close()
        await nc.close()


async def _at_least(js: JetStreamContext, n: int) -> bool:
    return await reply_count(js) >= n


async def test_sigterm_finishes_in_flight_work_before_exiting(server: NatsServer) -> None:
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    echo = EchoProcess(echo_env(server.url, ZHONGSHU_ECHO_DELAY_S="0.3")).wait_ready()
    try:
        await publish_inbound(js, 10)
        await eventually(
            lambda: _at_least(js, 2), f"{2} replies", 30
        )  # the second fetch (a batch) is in flight
        echo.proc.send_signal(signal.SIGTERM)
        assert echo.wait(30) == 0
        assert "draining" in echo.output
        # The batch it was working on was finished and acked, not left for ack_wait (2 s).
        assert await reply_count(js) == 10
        await asyncio.sleep(2.5)
        info = await js.consumer_info(streams.CHAT_INBOUND.name, "echo")
        assert (info.num_ack_pending, info.num_pending, info.num_redelivered) == (0, 0, 0)
    finally:
        echo.close()
        await nc.close()


def test_an_invalid_setting_stops_start_up_naming_the_variable(tmp_path: Path) -> None:
    echo = EchoProcess({"ZHONGSHU_HEALTH_PORT": "not-a-port"})
    assert echo.wait(30) == 2
    assert "ZHONGSHU_HEALTH_PORT" in echo.output
    assert "Traceback" not in echo.output


def test_an_unreachable_bus_fails_fast_with_a_clear_error() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    echo = EchoProcess({"ZHONGSHU_NATS_URL": url, "ZHONGSHU_CONNECT_TIMEOUT_S": "1"})
    assert echo.wait(30) == 1
    assert f"cannot reach NATS at {url}" in echo.output
    assert "Traceback" not in echo.output


async def test_health_readiness_and_metrics_are_served(server: NatsServer) -> None:
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    echo = EchoProcess(echo_env(server.url)).wait_ready()
    try:
        await publish_inbound(js, 5)
        await eventually(lambda: _at_least(js, 5), f"{5} replies", 30)
        base = f"http://127.0.0.1:{echo.health_port}"
        async with httpx.AsyncClient(base_url=base) as http:
            assert (await http.get("/healthz")).status_code == 200
            ready = await http.get("/readyz")
            assert ready.status_code == 200
            assert ready.json()["checks"] == {"bus": True}
            text = (await http.get("/metrics")).text
            assert 'zhongshu_messages_handled_total{consumer="echo",service="echo"} 5.0' in text
            assert "zhongshu_handler_seconds_bucket" in text
    finally:
        echo.close()
        await nc.close()


async def test_a_reply_continues_the_trace_of_its_message_and_logs_carry_it(
    server: NatsServer,
) -> None:
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    echo = EchoProcess(echo_env(server.url, ZHONGSHU_LOG_LEVEL="DEBUG")).wait_ready()
    try:
        await publish_inbound(js, 1, {H.TRACEPARENT: f"00-{trace_id}-00f067aa0ba902b7-01"})
        replies = await collect(js, subjects.chat_reply("feishu", TENANT), count=1)
        traceparent = (replies[0].header or {})[H.TRACEPARENT]
        assert traceparent.split("-")[1] == trace_id
        assert traceparent.split("-")[2] != "00f067aa0ba902b7"  # a new span of the same trace
    finally:
        echo.close()
        await nc.close()


class FakeCollector:
    """An OTLP/HTTP endpoint on 127.0.0.1 that records what is posted to it."""

    def __init__(self) -> None:
        posts: list[tuple[str, str, bytes]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                posts.append((self.path, self.headers.get("Content-Type", ""), body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.posts = posts
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()


async def test_spans_are_exported_over_otlp_when_an_endpoint_is_set(server: NatsServer) -> None:
    collector = FakeCollector()
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    echo = EchoProcess(echo_env(server.url, OTEL_EXPORTER_OTLP_ENDPOINT=collector.url)).wait_ready()
    try:
        await publish_inbound(js, 3)
        await eventually(lambda: _at_least(js, 3), f"{3} replies", 30)
        echo.proc.send_signal(signal.SIGTERM)
        assert echo.wait(30) == 0
        traces = [post for post in collector.posts if post[0] == "/v1/traces"]
        assert traces, "no spans were exported"
        assert traces[0][1] == "application/x-protobuf"
        assert b"process echo" in b"".join(body for _, _, body in traces)
    finally:
        echo.close()
        collector.close()
        await nc.close()
