"""R14 on every service's /metrics: every installed service runs as its own process (as `zhongshu
up` runs it, so each /metrics holds only what that process registers) on a JetStream of this
test, the session's Redis and PostgreSQL, and fakes for the platforms and the model. One Feishu
conversation goes through (ingress → router → agent → notifier → Feishu) and one API request
to the gateway; then each service's /metrics is parsed with Prometheus's parser and must hold
the R14 series that concern it: process CPU, memory and IO everywhere; backlog per consumer
wherever there is a consumer; inference latency at the agent; API outcomes at the gateway and
the webhooks; platform-call outcomes where platforms are called; alerts by level at the
watchdog."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from zhongshu.cli import services
from zhongshu.devstack import NatsServer
from zhongshu.devstack.fakes.dingtalk_openapi import FakeDingTalkOpenAPI
from zhongshu.devstack.fakes.feishu import FeishuEventSender, User
from zhongshu.devstack.fakes.feishu_openapi import FakeFeishuOpenAPI
from zhongshu.devstack.fakes.llm import FakeLLM
from zhongshu.devstack.testing import provision_all

ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 90.0  # generous: ten processes start at once on a shared machine
ENCRYPT_KEY, TOKEN = "enc-key-for-metrics", "verification-token-for-metrics"
BOT = User("Metrics Bot")
READY = re.compile(r"READY (\S+) health_port=(\d+)")

# Every process: CPU, memory, IO (R14), and what a share of its limits needs (R15's 70 %).
PROCESS = (
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_io_read_bytes_total",
    "process_io_write_bytes_total",
    "zhongshu_process_cpu_limit_cores",
    "zhongshu_process_memory_limit_bytes",
    "zhongshu_filesystem_size_bytes",
    "zhongshu_filesystem_avail_bytes",
)
# Series a service must have (with at least one sample) once the conversation went through.
OBSERVED = {
    "agent": ("zhongshu_agent_inference_seconds_bucket", "zhongshu_agent_inference_seconds_count"),
    "gateway": ("zhongshu_gateway_requests_total",),
    "ingress-feishu": ("zhongshu_webhook_requests_total", "zhongshu_ingress_events_total"),
    "notifier": ("zhongshu_platform_requests_total", "zhongshu_platform_request_seconds_count"),
}
# Families a service must declare (HELP and TYPE; samples only once something happened).
DECLARED = {
    "ingress-feishu": ("zhongshu_ingress_rejected",),
    "ingress-dingtalk": ("zhongshu_webhook_requests", "zhongshu_ingress_rejected"),
    "router": ("zhongshu_platform_requests", "zhongshu_platform_request_seconds"),
    "watchdog": ("zhongshu_alerts_active",),
}


@dataclass
class Running:
    name: str
    proc: asyncio.subprocess.Process
    log: Path
    port: int = 0

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@dataclass
class Hub:
    running: dict[str, Running] = field(default_factory=dict)
    feishu: FakeFeishuOpenAPI | None = None
    tenant: str = ""

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.running[name].port}"


def write_config(path: Path, tenant: str, llm: FakeLLM, feishu: FakeFeishuOpenAPI) -> None:
    path.write_text(
        f"""
tenants:
  {tenant}: {{name: Metrics}}
apps:
  lark-{tenant}:
    tenant: {tenant}
    platform: feishu
    feishu: {{app_id: {feishu.app_id}, app_secret: {feishu.app_secret},
             encrypt_key: {ENCRYPT_KEY}, verification_token: {TOKEN},
             bot_open_id: {BOT.open_id}}}
  ding-{tenant}:
    tenant: {tenant}
    platform: dingtalk
    dingtalk: {{app_key: ding-{tenant}, app_secret: ding-secret-{tenant},
               robot_code: ding-robot-{tenant}}}
model:
  providers: [{{name: fake, endpoint: '{llm.url}', model: fake-model}}]
  qps: 50
  timeout_s: 10
"""
    )


async def spawn(name: str, env: Mapping[str, str], folder: Path) -> Running:
    log = folder / f"{name}.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "zhongshu.cli",
            "run",
            name,
            env=dict(env),
            cwd=folder,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    return Running(name, proc, log)


async def until_ready(running: Running) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while True:
        found = READY.search(running.log.read_text(errors="replace"))
        if found:
            running.port = int(found.group(2))
            return
        assert running.proc.returncode is None, f"{running.name} exited:\n{running.tail()}"
        assert loop.time() < deadline, f"{running.name} not READY:\n{running.tail()}"
        await asyncio.sleep(0.1)


@pytest_asyncio.fixture
async def hub(
    private_nats_server: NatsServer, redis_url: str, postgres_url: str, tmp_path: Path
) -> AsyncIterator[Hub]:
    await provision_all(private_nats_server.url)
    tenant = "m" + uuid.uuid4().hex[:10]
    llm = FakeLLM()
    feishu = FakeFeishuOpenAPI(app_id=f"cli_{tenant}", app_secret=f"lark-secret-{tenant}")
    dingtalk = FakeDingTalkOpenAPI(
        app_key=f"ding-{tenant}", app_secret=f"ding-secret-{tenant}", robot_code=f"ding-{tenant}"
    )
    async with llm, feishu, dingtalk:
        config = tmp_path / "zhongshu.yaml"
        write_config(config, tenant, llm, feishu)
        (tmp_path / "data").mkdir()
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ZHONGSHU_", "MODEL_", "OTEL_", "FEISHU_", "DINGTALK_"))
        }
        env |= {
            "ZHONGSHU_NATS_URL": private_nats_server.url,
            "ZHONGSHU_REDIS_URL": redis_url,
            "ZHONGSHU_POSTGRES_URL": postgres_url,
            "ZHONGSHU_CONFIG": str(config),
            "ZHONGSHU_HEALTH_PORT": "0",
            "ZHONGSHU_JWT_SECRET": "jwt-secret-for-the-metrics-test-" + uuid.uuid4().hex,
            "ZHONGSHU_CALLBACK_KEY": "callback-key-for-the-metrics-test-" + uuid.uuid4().hex,
            "ZHONGSHU_OBJECT_STORE_URL": (tmp_path / "archive").as_uri(),
            "ZHONGSHU_METRICS_INTERVAL_S": "0.2",  # the backlog gauges refresh quickly
            "ZHONGSHU_DRAIN_TIMEOUT_S": "5",
            "FEISHU_BASE_URL": feishu.base_url,
            "DINGTALK_API_URL": dingtalk.base_url,
            "DINGTALK_OAPI_URL": dingtalk.base_url,
            "PYTHONUNBUFFERED": "1",
        }
        hub = Hub(feishu=feishu, tenant=tenant)
        try:
            for name in services.names():
                hub.running[name] = await spawn(name, env, tmp_path)
            await asyncio.gather(*(until_ready(r) for r in hub.running.values()))
            yield hub
        finally:
            for running in hub.running.values():
                if running.proc.returncode is None:
                    running.proc.terminate()
            for running in hub.running.values():
                try:
                    await asyncio.wait_for(running.proc.wait(), 15)
                except TimeoutError:
                    running.proc.kill()
                    await running.proc.wait()


async def converse(hub: Hub) -> None:
    """A user asks the bot a question in a Feishu group and gets the answer."""
    assert hub.feishu is not None
    chat_id = "oc_" + uuid.uuid4().hex
    message_id = hub.feishu.user_message(chat_id)
    async with FeishuEventSender(
        hub.url("ingress-feishu"),
        "lark-" + hub.tenant,
        encrypt_key=ENCRYPT_KEY,
        verification_token=TOKEN,
        app_id=hub.feishu.app_id,
        bot=BOT,
    ) as sender:
        payload = sender.message(
            text="how busy is the payments queue today",
            chat_type="group",
            mentions=[BOT],
            chat_id=chat_id,
            message_id=message_id,
        )
        delivery = await sender.send(payload)
    assert delivery.acknowledged, delivery.response.text
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while not any(d.chat_id == chat_id for d in hub.feishu.deliveries):
        assert loop.time() < deadline, "the answer never reached Feishu"
        await asyncio.sleep(0.1)


def parse(text: str) -> dict[str, list[Sample]]:
    """Series name → samples, through Prometheus's text parser (raises on a malformed line);
    each family's HELP/TYPE counts as declared even without samples."""
    series: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", family.name), family.name
        assert family.type != "unknown", f"{family.name} has no TYPE"
        series.setdefault(family.name, [])
        for sample in family.samples:
            series.setdefault(sample.name, []).append(sample)
    return series


async def scrape(client: httpx.AsyncClient, url: str) -> dict[str, list[Sample]]:
    answer = await client.get(url + "/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return parse(answer.text)


@pytest.mark.timeout(600)
async def test_every_service_exports_the_r14_series_that_concern_it(hub: Hub) -> None:
    await converse(hub)
    async with httpx.AsyncClient(timeout=10) as client:
        refused = await client.get(hub.url("gateway") + "/api/v1/quotas")  # no token
        assert refused.status_code == 401
        consumers = {
            name: {spec.durable for spec in services.load(name).consumer_specs}
            for name in hub.running
        }

        async def backlog_reported(name: str) -> dict[str, list[Sample]]:
            """/metrics once every consumer of ``name`` has reported its backlog."""
            loop = asyncio.get_running_loop()
            deadline = loop.time() + WAIT_S
            while True:
                found = await scrape(client, hub.url(name))
                reported = {
                    s.labels.get("consumer") for s in found.get("zhongshu_consumer_pending", [])
                }
                if consumers[name] <= reported:
                    return found
                assert loop.time() < deadline, f"{name}: backlog of {consumers[name] - reported}"
                await asyncio.sleep(0.2)

        scraped = dict(
            zip(hub.running, await asyncio.gather(*map(backlog_reported, hub.running)), strict=True)
        )

    problems: list[str] = []
    for name, series in scraped.items():
        missing = [s for s in PROCESS if not series.get(s)]
        problems += [f"{name}: no {s}" for s in missing]
        for durable in sorted(consumers[name]):
            for gauge in ("zhongshu_consumer_pending", "zhongshu_consumer_ack_pending"):
                labels = [s.labels for s in series.get(gauge, [])]
                if {"service": name, "consumer": durable} not in labels:
                    problems.append(f"{name}: no {gauge} for {durable}")
        problems += [
            f"{name}: no samples of {s}" for s in OBSERVED.get(name, ()) if not series.get(s)
        ]
        problems += [f"{name}: {f} not declared" for f in DECLARED.get(name, ()) if f not in series]
    assert not problems, "\n".join(problems)

    assert all(consumers[name] for name in ("router", "agent", "notifier"))
    ok = [s for s in scraped["agent"]["zhongshu_agent_inference_seconds_count"] if s.value > 0]
    assert {s.labels["outcome"] for s in ok} == {"ok"}
    answered = {
        s.labels["status"] for s in scraped["ingress-feishu"]["zhongshu_webhook_requests_total"]
    }
    assert "200" in answered
    statuses = {s.labels["status"] for s in scraped["gateway"]["zhongshu_gateway_requests_total"]}
    assert "401" in statuses
    sent = scraped["notifier"]["zhongshu_platform_requests_total"]
    assert {s.labels["platform"] for s in sent if s.value > 0} >= {"feishu"}
