"""The hub as `zhongshu up --public` runs it, with Caddy in front on random ports and a
certificate made here: a TLS 1.3 client gets through, a TLS 1.2 client is refused, a signed
Feishu `/help` through the edge is accepted and answered once at the fake platform, and while
ingress is down the edge answers 502/503 (the platform retries) until it is back, without the
edge being restarted."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from tests.proctree import kill_tree
from zhongshu.cli import runstate
from zhongshu.devstack import free_port
from zhongshu.devstack.fakes.feishu import FeishuEventSender, User
from zhongshu.devstack.fakes.feishu_openapi import FakeFeishuOpenAPI
from zhongshu.devstack.testing import eventually, localhost_certificate

pytestmark = pytest.mark.slow

ENCRYPT_KEY, TOKEN = "enc-key-for-edge-e2e", "verification-token-for-edge-e2e"
APP, APP_ID, APP_SECRET = "edge-app", "cli_edge", "edge-app-secret"
BOT = User("Edge Bot")
READY_TIMEOUT_S = 90.0


@dataclass
class Hub:
    proc: subprocess.Popen[str]
    data_dir: Path
    https_port: int
    ca: Path
    feishu: FakeFeishuOpenAPI
    log: Path

    @property
    def origin(self) -> str:
        return f"https://localhost:{self.https_port}"

    def pid_of(self, name: str) -> int:
        state = runstate.read(runstate.services_path(self.data_dir))
        assert state is not None
        [record] = [s for s in state.services if s.name == name]
        assert record.pid is not None
        return record.pid

    def client(self, version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3) -> httpx.AsyncClient:
        context = ssl.create_default_context(cafile=str(self.ca))
        context.minimum_version = min(version, ssl.TLSVersion.TLSv1_2)
        context.maximum_version = version
        # localhost resolves to 127.0.0.1, where --bind put the public side
        return httpx.AsyncClient(verify=context, timeout=10.0)


def _config(path: Path) -> None:
    path.write_text(
        f"""
tenants:
  acme: {{name: Acme}}
apps:
  {APP}:
    tenant: acme
    platform: feishu
    feishu: {{app_id: {APP_ID}, app_secret: {APP_SECRET}, encrypt_key: {ENCRYPT_KEY},
             verification_token: {TOKEN}, bot_open_id: {BOT.open_id}}}
    group: {{require_mention: true, prefixes: ["/"]}}
"""
    )


@contextlib.contextmanager
def _running(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[str]]:
    # Output to a file: a pipe nobody reads would block the hub once it is full.
    with log.open("w") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        try:
            yield proc
        finally:
            kill_tree(proc)


@pytest_asyncio.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    cert, key, ca_file = localhost_certificate(tmp_path)
    config = tmp_path / "zhongshu.yaml"
    _config(config)
    https_port = free_port()
    async with FakeFeishuOpenAPI(app_id=APP_ID, app_secret=APP_SECRET) as feishu:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ZHONGSHU_")}
        env |= {
            "COLUMNS": "200",
            "ZHONGSHU_CONFIG": str(config),
            "ZHONGSHU_HTTP_PORT": str(free_port()),
            "ZHONGSHU_HTTPS_PORT": str(https_port),
            "ZHONGSHU_HTTP_REDIRECT_PORT": str(free_port()),
            "FEISHU_BASE_URL": feishu.base_url,
        }
        data_dir, ready = tmp_path / "data", tmp_path / "ready"
        command = [sys.executable, "-m", "zhongshu.cli", "up", "--data-dir", str(data_dir)]
        command += ["--ready-file", str(ready), "--only", "ingress-feishu,router,notifier"]
        command += ["--public", "localhost", "--bind", "127.0.0.1"]
        command += ["--tls-cert", str(cert), "--tls-key", str(key)]
        log = tmp_path / "up.log"
        with _running(command, env, log) as proc:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not ready.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    pytest.fail(f"zhongshu up did not get ready:\n{log.read_text()}")
                await asyncio.sleep(0.1)
            yield Hub(proc, data_dir, https_port, ca_file, feishu, log)


def help_in(sender: FeishuEventSender, hub: Hub, chat: str) -> dict[str, object]:
    """A user's `/help` in a group, known to the fake platform so the answer can reply to it."""
    message_id = hub.feishu.user_message(chat)
    return sender.message(
        text="/help", chat_type="group", chat_id=chat, mentions=[BOT], message_id=message_id
    )


async def test_tls_13_gets_through_and_tls_12_is_refused(hub: Hub) -> None:
    async with hub.client() as client:
        health = await client.get(f"{hub.origin}/healthz")
    assert health.status_code == 200
    assert health.http_version in ("HTTP/1.1", "HTTP/2")
    assert "max-age=" in health.headers["strict-transport-security"]
    async with hub.client(ssl.TLSVersion.TLSv1_2) as old:
        with pytest.raises(httpx.ConnectError):
            await old.get(f"{hub.origin}/healthz")


async def test_a_signed_help_through_the_edge_is_answered_once_and_survives_an_ingress_crash(
    hub: Hub,
) -> None:
    async with hub.client() as client:
        sender = FeishuEventSender(
            hub.origin, APP, encrypt_key=ENCRYPT_KEY, verification_token=TOKEN, bot=BOT,
            client=client,
        )  # fmt: skip
        chat = "oc_edge"
        payload = help_in(sender, hub, chat)
        delivery = await sender.send(payload)
        assert delivery.acknowledged, [r.text for r in delivery.responses]
        await hub.feishu.wait_until(lambda: len(hub.feishu.deliveries) >= 1)
        again = await sender.send(payload)  # the platform re-pushes: still one answer
        assert again.acknowledged

        edge_pid = hub.pid_of("edge")
        os.kill(hub.pid_of("ingress-feishu"), signal.SIGKILL)
        statuses: list[int] = []

        async def answered() -> bool:
            body, headers = sender.encode(help_in(sender, hub, chat))
            try:
                response = await sender.post("events", body, headers)
            except httpx.TransportError:
                return False
            statuses.append(response.status_code)
            return response.status_code == 200

        await eventually(answered, "ingress is back behind the same edge", within_s=60)
        assert set(statuses[:-1]) <= {502, 503}, statuses
        assert hub.pid_of("edge") == edge_pid
    await hub.feishu.wait_until(lambda: len(hub.feishu.deliveries) >= 2)
    help_answers = [d for d in hub.feishu.deliveries if "/help" in str(d)]
    assert len(help_answers) == 2  # the first event once, the one after the crash once
