"""P3, end to end: signed platform events through the whole hub, as ``zhongshu up`` runs it, to
answers at the fake platforms; every figure against a raw pipeline measured in the same run.

Processes (each its own, on 127.0.0.1; the hub's CPU is read per process from ``/proc``):
  hub       ``python -m zhongshu.cli up --data-dir <tmp>``: every installed service, nats-server
            (``sync_interval: always``), PostgreSQL, Redis and Caddy in front, configured by a
            generated zhongshu.yaml (one Feishu app, one DingTalk app, the fake LLM as provider,
            QPS cap lifted with ``MODEL_QPS``); ``FEISHU_BASE_URL``, ``DINGTALK_API_URL`` and
            ``DINGTALK_OAPI_URL`` point at the fake platforms
  driver    the load generator AND the fake platforms (Feishu open API, DingTalk open API, rate
            limits lifted): it sends pre-signed webhooks over kept-alive connections, counts the
            answers where the platform receives them, and reads the CPU, RSS and JetStream
            writes of the system under test at the edges of every phase
  llm       the fake OpenAI-compatible model, answering at once
  raw-*     the baseline: ``raw-ingress`` (bare ASGI on uvicorn: check the signature, decrypt,
            one awaited JetStream publish with ``Nats-Msg-Id`` into a stream of a nats-server of
            its own with ``sync_interval: always``, 200) and ``raw-worker`` (pull consumer, 64
            in flight: the reply POSTed to the same fake platform, the model called first for
            free text, then ack): the least a durable webhook -> bus -> reply pipeline does

Phases, each run against raw then against the hub (closed loop: a fixed number of events in
flight, the next sent when one is answered; fixed rate: events scheduled at a fixed rate,
latency counted from the scheduled time):
  feishu.help.throughput   ``/help`` (answered by the router), closed loop, 60 s (quick 10 s)
  feishu.help.latency      ``/help`` at 100, 300, 1,000/s for 10 s each (quick: 100, 300; 3 s)
  feishu.chat.throughput   free text -> agent -> fake LLM -> streamed card, closed loop
  feishu.chat.latency@10   free text at a gentle fixed 10/s (quick 5 s, else 30 s): when the
                           card first shows and when its final text lands (the stream closed,
                           right after the update carrying the final text), and the gap
                           between the two (the model answers at once, so the final text
                           should follow within 100 ms)
  dingtalk.help.throughput ``/help`` through the DingTalk robot callback, closed loop
  dingtalk.chat.throughput free text through the DingTalk robot callback (the final text only:
                           no AI card template), closed loop
After the sends of a phase, the script waits until every accepted event was answered (or a
bound passed: the rest are ``lost``) and the system's consumers are idle again, so CPU and
JetStream writes per event include all the work the events caused.

  uv run python bench/e2e.py --quick    # smoke run, ~1.5 min
  uv run python bench/e2e.py            # full run, ~8 min
  uv run python bench/e2e.py --only feishu.help.throughput --seconds 30
  uv run python bench/e2e.py --quick --kill notifier,router   # SIGKILLed mid-phase: 0 lost?
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
from _common import (  # bench/ is on sys.path: scripts run as `python bench/<name>.py`
    Child,
    Deadline,
    NatsLifespanApp,
    _die_with_parent,
    bench_server,
    child_env,
    cpu_seconds,
    figure,
    log,
    pct,
    safe_ratio,
    send_json,
    serve_on_a_kernel_port,
    stop_on_sigterm,
)

SCRIPT = "e2e.py"
REPO = Path(__file__).resolve().parent.parent
TENANT = "bench"
FEISHU_APP, DINGTALK_APP = "bench-feishu", "bench-dingtalk"
FEISHU_APP_ID, FEISHU_SECRET = "cli_bench_e2e", "bench-feishu-secret"
ENCRYPT_KEY, VERIFICATION_TOKEN = "bench-encrypt-key", "bench-verification-token"
BOT_OPEN_ID = "ou_bench_bot"
DT_KEY, DT_SECRET = "dingbenche2e", "bench-dingtalk-secret"
UNLIMITED = 1_000_000_000
RAW_STREAM, RAW_SUBJECTS = "RAW_INBOUND", "raw.inbound.>"
RAW_DURABLE = "raw-worker"
RAW_IN_FLIGHT = 64
RAW_HELP = "Commands:\n/help — list the commands"  # what the raw worker answers to /help
HUB = "hub"
RAW = "raw"
HUB_DESC = "zhongshu up: every service, nats-server sync_interval always, PostgreSQL, Redis, Caddy"
RAW_DESC = (
    "raw pipeline: uvicorn bare ASGI (signature, decrypt, 1 awaited JetStream publish with "
    "Nats-Msg-Id, fsync) -> nats-py pull worker, 64 in flight (free text: 1 non-streamed model "
    "call) -> reply POST to the same fake platform -> ack; same driver, same fakes"
)
P3_HELP_RPS = 1000.0
P3_CHAT_RPS = 300.0
P3_P99_MS = 100.0
P3_P99_RATE = 300.0
P3_CPU_MS = 2.0
P3_FINAL_AFTER_FIRST_MS = 100.0
READY_TIMEOUT_S = 120.0
# With --kill, when in a phase's sending time the named services are killed (SIGKILL).
KILL_AT = 0.4
KILLABLE = frozenset(
    {"router", "notifier", "agent", "projector", "archiver", "taskengine", "ingress-feishu",
     "ingress-dingtalk", "gateway"}
)  # fmt: skip
MB = 1024 * 1024


# ---------------------------------------------------------------- a minimal HTTP/1.1 client


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length, chunked, keep = -1, False, True
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            keep = b"close" not in value.lower()
    if chunked:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        return status, b"".join(parts), keep
    if length >= 0:
        return status, await reader.readexactly(length), keep
    return status, await reader.read(), False


class HttpPool:
    """Kept-alive HTTP/1.1 connections to one host:port, at most ``size`` requests in flight;
    requests are pre-encoded bytes (:func:`http_request`). A fraction of httpx's CPU per request,
    so one Python process offers well over 1k requests/s."""

    IDLE_S = 4.0  # uvicorn closes a kept-alive connection idle for 5 s

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host, self.port = host, port
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self._slots = asyncio.Semaphore(size)

    async def _connection(self, fresh: bool) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while self._idle and not fresh:
            reader, writer, used = self._idle.pop()
            if time.monotonic() - used < self.IDLE_S:
                return reader, writer
            writer.close()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        with contextlib.suppress(OSError):
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return reader, writer

    async def request(self, data: bytes) -> tuple[int, bytes]:
        async with self._slots:
            for attempt in (0, 1):
                reader, writer = await self._connection(fresh=bool(attempt))
                try:
                    writer.write(data)
                    status, body, keep = await _read_response(reader)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    writer.close()
                    if attempt:
                        raise
                    continue  # a kept-alive connection the server had closed: a new one
                if keep:
                    self._idle.append((reader, writer, time.monotonic()))
                else:
                    writer.close()
                return status, body
        raise AssertionError("unreachable")

    def close(self) -> None:
        for _, writer, _ in self._idle:
            writer.close()
        self._idle.clear()


def http_request(
    method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def json_post(path: str, payload: Any, headers: Mapping[str, str] | None = None) -> bytes:
    body = json.dumps(payload, ensure_ascii=False).encode()
    return http_request("POST", path, body, {"Content-Type": "application/json", **(headers or {})})


# ---------------------------------------------------------------- /proc: CPU and RSS per process

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Proc:
    ppid: int
    comm: str
    cpu_s: float
    rss: int


def proc_table() -> dict[int, Proc]:
    """Every process on the box: parent, name, CPU seconds (user + system) and RSS."""
    table: dict[int, Proc] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        head, _, rest = stat.rpartition(")")
        fields = rest.split()
        try:
            table[int(entry)] = Proc(
                int(fields[1]),
                head.partition("(")[2],
                (int(fields[11]) + int(fields[12])) / _TICK,
                int(fields[21]) * _PAGE,
            )
        except (IndexError, ValueError):
            continue
    return table


_COMM_NAMES = {"nats-server": "nats-server", "postgres": "postgres", "redis-server": "redis"}


def hub_groups(up_pid: int, data_dir: Path, table: dict[int, Proc]) -> dict[str, list[int]]:
    """The hub's processes by name: the services of ``<data-dir>/run/services.json`` (with
    anything they started), ``up`` itself, and the embedded servers found among its descendants
    by their process name (every PostgreSQL backend counts as ``postgres``)."""
    from zhongshu.cli import runstate

    state = runstate.read(runstate.services_path(data_dir))
    named = {r.pid: r.name for r in (state.services if state else []) if r.pid}
    children: dict[int, list[int]] = defaultdict(list)
    for pid, proc in table.items():
        children[proc.ppid].append(pid)
    groups: dict[str, list[int]] = defaultdict(list)
    if up_pid in table:
        groups["up"].append(up_pid)
    todo = [(child, None) for child in children.get(up_pid, [])]
    while todo:
        pid, owner = todo.pop()
        name = owner or named.get(pid) or _COMM_NAMES.get(table[pid].comm)
        groups[name or f"other:{table[pid].comm}"].append(pid)
        todo += [(child, owner or named.get(pid)) for child in children.get(pid, [])]
    return dict(groups)


def box_cpu() -> tuple[float, float]:
    """CPU seconds the whole box has been busy (user, nice, system, irq, softirq) and stolen by
    the hypervisor, over all cores (``/proc/stat``)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6]
        return busy / _TICK, fields[7] / _TICK
    return float("nan"), float("nan")


def sample(groups: Mapping[str, list[int]], table: dict[int, Proc]) -> dict[str, dict[str, Any]]:
    return {
        name: {
            "cpu_s": sum(table[p].cpu_s for p in pids if p in table),
            "rss": sum(table[p].rss for p in pids if p in table),
            "pids": sorted(pids),
        }
        for name, pids in groups.items()
    }


# ---------------------------------------------------------------- the driver: fake platforms


class Tracker:
    """Every event of one phase: when it was sent, accepted (HTTP 200), first answered and
    answered in full (a streamed card closed, or a plain reply), and how many replies it got.
    Keys are chat ids (Feishu) or conversation ids (DingTalk), one per event."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.sent: list[float] = []
        self.actual: list[float] = []
        self.accepted: list[bool] = []
        self.first: list[float] = []
        self.done: list[float] = []
        self.replies: list[int] = []
        self.cards: dict[str, int] = {}
        self.closed_early: dict[str, float] = {}
        self.completed = 0
        self.stray = 0
        self.on_done: Callable[[], None] | None = None

    def add(self, key: str) -> int:
        i = len(self.sent)
        self.index[key] = i
        for column in (self.sent, self.actual, self.first, self.done):
            column.append(0.0)
        self.accepted.append(False)
        self.replies.append(0)
        return i

    def reply(self, key: str, at: float, card_id: str | None) -> None:
        i = self.index.get(key)
        if i is None:
            self.stray += 1
            return
        self.replies[i] += 1
        if not self.first[i]:
            self.first[i] = at
        if card_id is None:
            self._complete(i, at)
            return
        self.cards[card_id] = i
        if card_id in self.closed_early:
            self._complete(i, max(at, self.closed_early.pop(card_id)))

    def closed(self, card_id: str, at: float) -> None:
        i = self.cards.get(card_id)
        if i is None:
            self.closed_early[card_id] = at
        else:
            self._complete(i, at)

    def _complete(self, i: int, at: float) -> None:
        if self.done[i]:
            return
        self.done[i] = at
        self.completed += 1
        if self.on_done is not None:
            self.on_done()


def fakes() -> tuple[Any, Any]:
    """The fake Feishu and DingTalk open APIs with every rate limit lifted, reporting each
    answer to the phase's tracker as it lands."""
    from zhongshu.devstack.fakes.base_openapi import SlidingWindow
    from zhongshu.devstack.fakes.dingtalk_openapi import FakeDingTalkOpenAPI
    from zhongshu.devstack.fakes.feishu_openapi import FakeFeishuOpenAPI

    class BenchFeishu(FakeFeishuOpenAPI):
        tracker: Tracker | None = None
        scanned = 0

        def _notify(self) -> None:
            while self.scanned < len(self.deliveries):
                d = self.deliveries[self.scanned]
                self.scanned += 1
                if self.tracker is not None:
                    card = None
                    if d.msg_type == "interactive" and d.content.get("type") == "card":
                        card = str(d.content.get("data", {}).get("card_id"))
                    self.tracker.reply(d.chat_id, d.at, card)
            super()._notify()

        async def _card_settings(self, request: Any) -> Any:
            response = await super()._card_settings(request)
            card_id = request.path_params["card_id"]
            card = self.cards.get(card_id)
            closed = response.status_code == 200 and card is not None and not card.streaming
            if closed and self.tracker is not None:
                self.tracker.closed(card_id, time.monotonic())
            return response

    class BenchDingTalk(FakeDingTalkOpenAPI):
        tracker: Tracker | None = None

        def _record(self, channel: str, target: str, msgtype: str, content: Any) -> None:
            super()._record(channel, target, msgtype, content)
            if self.tracker is not None:
                self.tracker.reply(target, time.monotonic(), None)

    feishu = BenchFeishu(
        app_id=FEISHU_APP_ID,
        app_secret=FEISHU_SECRET,
        chat_limit=UNLIMITED,
        contact_limit=UNLIMITED,
        api_limit=UNLIMITED,
        api_limit_per_min=UNLIMITED,
    )
    feishu.message_limit = SlidingWindow(UNLIMITED, 1.0)
    feishu.card_limit = SlidingWindow(UNLIMITED, 1.0)
    dingtalk = BenchDingTalk(
        app_key=DT_KEY,
        app_secret=DT_SECRET,
        robot_code=DT_KEY,
        robot_limit=UNLIMITED,
        card_rate=UNLIMITED,
        contact_limit=UNLIMITED,
    )
    return feishu, dingtalk


# ---------------------------------------------------------------- the driver: events


@dataclass
class Event:
    key: str
    data: bytes
    index: int = -1
    tries: int = 0


_QUESTIONS = (
    "what did we decide about the launch date? please remind me of the owners too",
    "summarize the incident from last night in three bullet points",
    "draft a short note to the team about the Q3 budget review on Friday",
)


class Feed:
    """Signed, distinct platform events made on demand (~35 us each): Feishu
    ``im.message.receive_v1`` (AES-256-CBC with the Encrypt Key, ``X-Lark-Signature``) or a
    DingTalk robot callback (``timestamp`` / ``sign``) with a sessionWebhook at the fake."""

    def __init__(self, platform: str, kind: str, tag: str, feishu: Any, dingtalk: Any) -> None:
        from zhongshu.devstack.fakes.feishu import FeishuEventSender, User

        self.platform, self.kind, self.tag = platform, kind, tag
        self.feishu, self.dingtalk = feishu, dingtalk
        self.user = User("Li Lei", open_id="ou_bench_user", union_id="on_bench_user")
        self.sender = FeishuEventSender(
            "http://127.0.0.1:1",
            FEISHU_APP,
            encrypt_key=ENCRYPT_KEY,
            verification_token=VERIFICATION_TOKEN,
            app_id=FEISHU_APP_ID,
            bot=User("Bench Bot", open_id=BOT_OPEN_ID),
        )
        self.made = 0

    def text(self, i: int) -> str:
        if self.kind == "help":
            return "/help"
        return f"{_QUESTIONS[i % len(_QUESTIONS)]} (#{self.tag}-{i})"  # distinct: no cache hit

    def make(self) -> Event:
        i = self.made
        self.made += 1
        if self.platform == "feishu":
            return self._feishu(i)
        return self._dingtalk(i)

    def _feishu(self, i: int) -> Event:
        from zhongshu.devstack.fakes.feishu_openapi import Message

        chat, message_id = f"oc_{self.tag}_{i}", f"om_{self.tag}_{i}"
        text = self.text(i)
        # the user's message, so that the platform can reply to it
        self.feishu.messages[message_id] = Message(chat, "text", {"text": text}, by_app=False)
        payload = self.sender.message(
            text,
            chat_type="p2p",
            sender=self.user,
            chat_id=chat,
            message_id=message_id,
            event_id=f"ev_{self.tag}_{i}",
        )
        body, headers = self.sender.encode(payload)
        path = f"/webhooks/feishu/{FEISHU_APP}/events"
        return Event(chat, http_request("POST", path, body, headers))

    def _dingtalk(self, i: int) -> Event:
        from zhongshu.devstack.fakes.dingtalk import bot_message, now_ms
        from zhongshu.devstack.fakes.dingtalk import sign as dingtalk_sign

        conversation = f"cid{self.tag}x{i}"
        url, expires = self.dingtalk.session_webhook(conversation)
        payload = bot_message(
            text=self.text(i),
            conversation_type="1",
            conversation_id=conversation,
            msg_id=f"msg{self.tag}x{i}",
            robot_code=DT_KEY,
            sender_staff_id="staff-bench",
        )
        payload["sessionWebhook"] = url
        payload["sessionWebhookExpiredTime"] = int(expires.timestamp() * 1000)
        stamp = now_ms()
        headers = {
            "Content-Type": "application/json",
            "timestamp": str(stamp),
            "sign": dingtalk_sign(stamp, DT_SECRET),
        }
        body = json.dumps(payload).encode()
        path = f"/webhooks/dingtalk/{DINGTALK_APP}"
        return Event(conversation, http_request("POST", path, body, headers))

    async def aclose(self) -> None:
        await self.sender.aclose()


# ---------------------------------------------------------------- the driver: a system under test


class Target:
    """The hub or the raw pipeline as the driver sees it: where to send, its processes, its
    JetStream (writes per event, and whether its consumers are idle)."""

    def __init__(self, name: str, spec: dict[str, Any]) -> None:
        self.name = name
        self.port = int(spec["port"])
        self.nats_url = str(spec["nats_url"])
        self.up_pid = spec.get("up_pid")
        self.data_dir = Path(spec["data_dir"]) if spec.get("data_dir") else None
        self.pids: dict[str, int] = spec.get("pids", {})
        self.js: Any = None
        self.nc: Any = None

    async def connect(self) -> None:
        import nats

        self.nc = await nats.connect(self.nats_url, name=f"bench-e2e-driver-{self.name}")
        self.js = self.nc.jetstream()

    async def close(self) -> None:
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()

    def processes(self) -> dict[str, dict[str, Any]]:
        table = proc_table()
        if self.up_pid is not None and self.data_dir is not None:
            groups = hub_groups(int(self.up_pid), self.data_dir, table)
        else:
            groups = {name: [pid] for name, pid in self.pids.items()}
        return sample(groups, table)

    def kill(self, names: list[str]) -> dict[str, list[int]]:
        """SIGKILL every process of the named services (``zhongshu up`` restarts them); the
        pids killed, by name."""
        groups = self.processes()
        killed: dict[str, list[int]] = {}
        for name in names:
            pids = groups.get(name, {}).get("pids", [])
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            killed[name] = pids
        return killed

    async def writes(self) -> dict[str, int]:
        """Messages ever stored per stream (``last_seq``: KV buckets are streams too)."""
        return {s.config.name: s.state.last_seq for s in await self.js.streams_info()}

    async def backlog(self) -> int:
        """Messages not yet delivered or not yet acked, over every consumer; the archiver's
        unacked ones excepted (it acks a batch once the batch is in the object store, later)."""
        total = 0
        for s in await self.js.streams_info():
            for c in await self.js.consumers_info(s.config.name):
                total += c.num_pending
                if not c.name.startswith("archiver-"):
                    total += c.num_ack_pending
        return total


# ---------------------------------------------------------------- the driver: one phase


def _lat(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {"p50": pct(ms, 50), "p99": pct(ms, 99), "max": max(ms) if ms else float("nan")}


async def run_phase(
    phase: dict[str, Any], target: Target, feishu: Any, dingtalk: Any, seq: int
) -> dict[str, Any]:
    seconds = float(phase["seconds"] if target.name == HUB else phase["baseline_seconds"])
    mode, platform, kind = phase["mode"], phase["platform"], phase["kind"]
    # Chat ids differ between the raw and the hub run of a phase: a late answer of one is
    # never counted as a duplicate of the other's.
    feed = Feed(platform, kind, f"{os.getpid()}p{seq}{target.name}", feishu, dingtalk)
    tracker = Tracker()
    fake = feishu if platform == "feishu" else dingtalk
    fake.tracker = tracker
    conns = int(phase["window"]) if mode == "closed" else int(phase["conns"])
    pool = HttpPool("127.0.0.1", target.port, conns)
    queue: asyncio.Queue[Event] = asyncio.Queue()
    sending = True
    http_errors: Counter[str] = Counter()
    events: list[Event] = []
    if mode == "open":  # made before the clock starts
        events = [feed.make() for _ in range(int(float(phase["rate"]) * seconds))]

    def feed_one() -> None:
        if sending:
            queue.put_nowait(feed.make())

    async def worker() -> None:
        while True:
            event = await queue.get()
            if event.index < 0:
                event.index = tracker.add(event.key)
                tracker.sent[event.index] = time.monotonic()
            tracker.actual[event.index] = time.monotonic()
            try:
                status, _ = await pool.request(event.data)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                status = 0
                http_errors[type(exc).__name__] += 1
            queue.task_done()
            if status == 200:
                tracker.accepted[event.index] = True
                continue
            if status:
                http_errors[str(status)] += 1
            if event.tries < 5:  # the platform pushes again
                event.tries += 1
                asyncio.get_running_loop().call_later(0.5, queue.put_nowait, event)

    error_mark = (len(feishu.errors), len(dingtalk.errors), feishu.deduplicated)
    cards0 = len(feishu.cards)
    writes0 = await target.writes()
    backlog0 = await target.backlog()
    cpu0, drv0, box0 = target.processes(), cpu_seconds(), box_cpu()
    t0 = time.monotonic()
    workers = [asyncio.create_task(worker()) for _ in range(conns)]
    killed: dict[str, list[int]] = {}
    kill_names = list(phase.get("kill", ())) if target.name == HUB else []

    async def kill_later() -> None:
        # Mid-phase, while events are in flight at every hop.
        await asyncio.sleep(seconds * KILL_AT)
        killed.update(target.kill(kill_names))
        log(f"SIGKILL {', '.join(f'{k} {v}' for k, v in killed.items())}")

    killer = asyncio.create_task(kill_later()) if kill_names else None
    try:
        if mode == "closed":
            tracker.on_done = feed_one
            for _ in range(int(phase["window"])):
                feed_one()
            await asyncio.sleep(seconds)
            sending = False
            t1 = time.monotonic()
        else:
            rate = float(phase["rate"])
            for i, event in enumerate(events):
                due = t0 + i / rate
                delay = due - time.monotonic()
                if delay > 0.001:
                    await asyncio.sleep(delay)
                event.index = tracker.add(event.key)
                tracker.sent[event.index] = due
                queue.put_nowait(event)
            await queue.join()
            t1 = time.monotonic()
        cpu1, drv1, box1 = target.processes(), cpu_seconds(), box_cpu()
        # every accepted event answered in full, or the bound: the rest are lost
        drain_until = time.monotonic() + float(phase["drain_s"])
        while time.monotonic() < drain_until:
            waiting = sum(1 for ok, done in zip(tracker.accepted, tracker.done, strict=True)
                          if ok and not done)  # fmt: skip
            if not waiting and queue.empty():
                break
            await asyncio.sleep(0.05)
        t_drained = time.monotonic()
        await asyncio.sleep(0.5)  # a duplicate sent right after the answer still counts
        settle_until = time.monotonic() + float(phase["settle_s"])
        settled = False
        while time.monotonic() < settle_until:
            if await target.backlog() <= backlog0:
                settled = True
                break
            await asyncio.sleep(0.1)
        t2 = time.monotonic()
        cpu2 = target.processes()
        writes1 = await target.writes()
    finally:
        sending = False
        fake.tracker = None
        for task in [*workers, *([killer] if killer else [])]:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        pool.close()
        await feed.aclose()

    n = len(tracker.sent)
    ok = [i for i in range(n) if tracker.accepted[i]]
    answered = [i for i in ok if tracker.done[i]]
    window_s = t1 - t0
    warm = min(2.0, 0.1 * window_s) if mode == "closed" else 0.0
    in_window = sum(1 for i in answered if t0 + warm <= tracker.done[i] <= t1)
    per_process: dict[str, dict[str, Any]] = {}
    for name in sorted(set(cpu0) | set(cpu2)):
        a, b, c = cpu0.get(name), cpu1.get(name), cpu2.get(name)
        start = a["cpu_s"] if a else 0.0
        per_process[name] = {
            "cpu_s_window": max(0.0, (b["cpu_s"] if b else 0.0) - start),
            "cpu_s_total": max(0.0, (c["cpu_s"] if c else 0.0) - start),
            "rss_mb": (c["rss"] if c else 0) / MB,
            "processes": len(c["pids"]) if c else 0,
            "restarted": bool(a and c and a["pids"] != c["pids"] and name != "postgres"),
        }
    writes = {k: v - writes0.get(k, 0) for k, v in writes1.items() if v - writes0.get(k, 0)}
    codes = Counter(str(code) for _, code in feishu.errors[error_mark[0] :])
    codes.update(str(code) for _, code in dingtalk.errors[error_mark[1] :])
    return {
        "phase": phase["name"],
        "target": target.name,
        "mode": mode,
        "platform": platform,
        "kind": kind,
        "seconds": seconds,
        "window": phase.get("window"),
        "rate": phase.get("rate"),
        "window_s": window_s,
        "total_s": t2 - t0,
        "drain_s": t_drained - t1,
        "settled": settled,
        "sent": n,
        "accepted": len(ok),
        "not_accepted": n - len(ok),
        "http_errors": dict(http_errors),
        "answered": len(answered),
        "lost": len(ok) - len(answered),
        "first_only": sum(1 for i in ok if tracker.first[i] and not tracker.done[i]),
        "duplicates": sum(max(0, tracker.replies[i] - 1) for i in range(n)),
        "stray_replies": tracker.stray,
        "killed": killed,
        "resends_absorbed": feishu.deduplicated - error_mark[2],
        "cards_created": len(feishu.cards) - cards0,
        "cards_shown": len(tracker.cards),
        "platform_errors": dict(codes),
        "throughput": in_window / max(1e-9, window_s - warm),
        "sent_rate": n / max(1e-9, window_s),
        "latency_first_ms": _lat([tracker.first[i] - tracker.sent[i] for i in answered]),
        "latency_ms": _lat([tracker.done[i] - tracker.sent[i] for i in answered]),
        "latency_final_after_first_ms": _lat(
            [tracker.done[i] - tracker.first[i] for i in answered]
        ),
        "send_lag_ms": _lat([tracker.actual[i] - tracker.sent[i] for i in range(n)]),
        "driver_cpu_pct_of_core": (drv1 - drv0) / max(1e-9, window_s) * 100,
        # the rest of the box during the sends: neither the system under test nor the driver
        "others_cpu_pct_of_core": max(
            0.0,
            (
                (box1[0] - box0[0])
                - (drv1 - drv0)
                - sum(p["cpu_s_window"] for p in per_process.values())
            )
            / max(1e-9, window_s)
            * 100,
        ),
        "steal_pct_of_core": (box1[1] - box0[1]) / max(1e-9, window_s) * 100,
        "processes": per_process,
        "writes": writes,
    }


def wait_for_plan(path: Path) -> dict[str, Any]:
    """The orchestrator writes the plan once the systems under test are up."""
    while not path.exists():
        time.sleep(0.1)
    return dict(json.loads(path.read_text()))


async def driver(a: argparse.Namespace) -> None:
    feishu, dingtalk = fakes()
    async with feishu, dingtalk:
        print(json.dumps({"feishu": feishu.base_url, "dingtalk": dingtalk.base_url}), flush=True)
        plan = await asyncio.to_thread(wait_for_plan, Path(a.plan))
        targets = {name: Target(name, spec) for name, spec in plan["targets"].items()}
        for target in targets.values():
            await target.connect()
        try:
            for seq, phase in enumerate(plan["phases"]):
                for name in phase["targets"]:
                    result = await run_phase(phase, targets[name], feishu, dingtalk, seq)
                    print(json.dumps(result), flush=True)
        finally:
            for target in targets.values():
                await target.close()
        print(json.dumps({"done": True}), flush=True)


def role_driver(a: argparse.Namespace) -> None:
    import uvloop

    uvloop.run(driver(a))


# ---------------------------------------------------------------- role: the fake LLM


def role_llm(a: argparse.Namespace) -> None:
    import uvloop

    from zhongshu.devstack.fakes.llm import FakeLLM

    async def serve() -> None:
        fake = FakeLLM(keep_bodies=100)
        await fake.start()
        print(json.dumps({"url": fake.url}), flush=True)
        await fake.serving()

    uvloop.run(serve())


# ---------------------------------------------------------------- the raw baseline


class _Header(msgspec.Struct):
    event_id: str
    token: str = ""


class _FeishuPush(msgspec.Struct):
    header: _Header


class _DingTalkPush(msgspec.Struct):
    msgId: str  # the platform's field name


def _aes_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class RawIngress(NatsLifespanApp):
    """The baseline's front: the signature checked over the raw body, the body decrypted (Feishu),
    one awaited JetStream publish with ``Nats-Msg-Id`` (fsynced before the PubAck), 200."""

    def __init__(self, url: str) -> None:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        super().__init__(url)
        self.key = _aes_key(ENCRYPT_KEY)
        self._cipher = lambda iv: Cipher(algorithms.AES(self.key), modes.CBC(iv)).decryptor()
        self.feishu = msgspec.json.Decoder(_FeishuPush)
        self.dingtalk = msgspec.json.Decoder(_DingTalkPush)
        self.envelope = msgspec.json.Decoder(dict[str, str])

    def _feishu(self, headers: dict[bytes, bytes], body: bytes) -> tuple[str, bytes, str] | int:
        ts = headers.get(b"x-lark-request-timestamp", b"")
        nonce = headers.get(b"x-lark-request-nonce", b"")
        signature = headers.get(b"x-lark-signature", b"").decode()
        expected = hashlib.sha256(ts + nonce + ENCRYPT_KEY.encode() + body).hexdigest()
        if not hmac.compare_digest(signature, expected):
            return 401
        raw = base64.b64decode(self.envelope.decode(body)["encrypt"])
        decryptor = self._cipher(raw[:16])
        padded = decryptor.update(raw[16:]) + decryptor.finalize()
        plain = padded[: -padded[-1]]
        push = self.feishu.decode(plain)
        if push.header.token != VERIFICATION_TOKEN:
            return 401
        return "raw.inbound.feishu", plain, f"feishu:{push.header.event_id}"

    def _dingtalk(self, headers: dict[bytes, bytes], body: bytes) -> tuple[str, bytes, str] | int:
        stamp = headers.get(b"timestamp", b"").decode()
        mac = hmac.new(DT_SECRET.encode(), f"{stamp}\n{DT_SECRET}".encode(), hashlib.sha256)
        if not hmac.compare_digest(headers.get(b"sign", b"").decode(), base64.b64encode(
            mac.digest()).decode()):  # fmt: skip
            return 401
        return "raw.inbound.dingtalk", body, f"dingtalk:{self.dingtalk.decode(body).msgId}"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        status, out = 200, b'{"msg":"success"}'
        path = scope["path"]
        if scope["method"] == "POST":
            headers = dict(scope["headers"])
            body = b"".join(chunks)
            try:
                if path.startswith("/webhooks/feishu/"):
                    got = self._feishu(headers, body)
                else:
                    got = self._dingtalk(headers, body)
            except (ValueError, KeyError, msgspec.DecodeError):
                got = 400
            if isinstance(got, int):
                status, out = got, b'{"error":"refused"}'
            else:
                subject, data, msg_id = got
                try:
                    await self.js.publish(subject, data, headers={"Nats-Msg-Id": msg_id})
                except Exception:
                    status, out = 503, b'{"error":"bus unavailable"}'
        await send_json(send, status, out)


def role_raw_ingress(a: argparse.Namespace) -> None:
    serve_on_a_kernel_port(RawIngress(a.url), http="httptools")


class _Message(msgspec.Struct):
    message_id: str
    content: str


class _FeishuEvent(msgspec.Struct):
    message: _Message


class _FeishuInbound(msgspec.Struct):
    header: _Header
    event: _FeishuEvent


class _DingTalkText(msgspec.Struct):
    content: str


class _DingTalkInbound(msgspec.Struct):
    msgId: str
    sessionWebhook: str
    text: _DingTalkText


async def raw_worker(a: argparse.Namespace) -> None:
    """The baseline's back: pull, answer at the platform (free text: ask the model first, one
    non-streamed call), ack after the platform's 200; ``RAW_IN_FLIGHT`` messages at a time."""
    import nats

    pools: dict[tuple[str, int], HttpPool] = {}

    def pool(url: str) -> tuple[HttpPool, str]:
        parts = urlsplit(url)
        key = (parts.hostname or "127.0.0.1", parts.port or 80)
        if key not in pools:
            pools[key] = HttpPool(key[0], key[1], RAW_IN_FLIGHT)
        return pools[key], parts.path + (f"?{parts.query}" if parts.query else "")

    feishu_pool, _ = pool(a.feishu)
    llm_pool, llm_path = pool(a.llm.rstrip("/") + "/chat/completions")
    _, body = await feishu_pool.request(
        json_post(
            "/open-apis/auth/v3/tenant_access_token/internal",
            {"app_id": FEISHU_APP_ID, "app_secret": FEISHU_SECRET},
        )
    )
    token = json.loads(body)["tenant_access_token"]
    feishu_decoder = msgspec.json.Decoder(_FeishuInbound)
    dingtalk_decoder = msgspec.json.Decoder(_DingTalkInbound)

    async def answer(text: str) -> str:
        if text.startswith("/help"):
            return RAW_HELP
        request = {"model": "fake-model", "messages": [{"role": "user", "content": text}]}
        status, body = await llm_pool.request(json_post(llm_path, request))
        if status != 200:
            raise RuntimeError(f"model answered {status}")
        return str(json.loads(body)["choices"][0]["message"]["content"])

    async def handle(msg: Any) -> None:
        try:
            if msg.subject.endswith(".feishu"):
                event = feishu_decoder.decode(msg.data)
                text = json.loads(event.event.message.content).get("text", "")
                reply = {
                    "msg_type": "text",
                    "content": json.dumps({"text": await answer(text)}, ensure_ascii=False),
                    "uuid": event.header.event_id[:50],
                }
                path = f"/open-apis/im/v1/messages/{event.event.message.message_id}/reply"
                request = json_post(path, reply, {"Authorization": f"Bearer {token}"})
                status, _ = await feishu_pool.request(request)
            else:
                ding = dingtalk_decoder.decode(msg.data)
                target, path = pool(ding.sessionWebhook)
                payload = {"msgtype": "text", "text": {"content": await answer(ding.text.content)}}
                status, _ = await target.request(json_post(path, payload))
            if status == 200:
                await msg.ack()
            else:
                await msg.nak(delay=1)
        except Exception as exc:
            print(f"raw-worker: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            with contextlib.suppress(Exception):
                await msg.nak(delay=1)
        finally:
            slots.release()

    nc = await nats.connect(a.url, name="bench-raw-worker")
    js = nc.jetstream()
    sub = await js.pull_subscribe(RAW_SUBJECTS, durable=RAW_DURABLE, stream=RAW_STREAM)
    slots = asyncio.Semaphore(RAW_IN_FLIGHT)
    tasks: set[asyncio.Task[None]] = set()
    print("READY raw-worker", flush=True)
    while True:
        await slots.acquire()
        batch = 1
        while batch < RAW_IN_FLIGHT and not slots.locked():
            await slots.acquire()
            batch += 1
        try:
            msgs = await sub.fetch(batch, timeout=1.0)
        except TimeoutError:  # nats-py raises the built-in one (or its subclass)
            msgs = []
        for _ in range(batch - len(msgs)):
            slots.release()
        for msg in msgs:
            task = asyncio.create_task(handle(msg))
            tasks.add(task)
            task.add_done_callback(tasks.discard)


def role_raw_worker(a: argparse.Namespace) -> None:
    import uvloop

    uvloop.run(raw_worker(a))


async def provision_raw(url: str) -> None:
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

    nc = await nats.connect(url, name="bench-e2e-orchestrator")
    try:
        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(
                name=RAW_STREAM,
                subjects=[RAW_SUBJECTS],
                storage=StorageType.FILE,
                duplicate_window=120.0,
                max_age=3600.0,
            )
        )
        await js.add_consumer(
            RAW_STREAM,
            ConsumerConfig(
                durable_name=RAW_DURABLE,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=30.0,
                max_ack_pending=10_000,
            ),
        )
    finally:
        await nc.close()


# ---------------------------------------------------------------- role: the hub


def hub_config(path: Path, llm_url: str) -> Path:
    path.write_text(
        f"""tenants:
  {TENANT}: {{name: Bench}}
apps:
  {FEISHU_APP}:
    tenant: {TENANT}
    platform: feishu
    feishu:
      app_id: {FEISHU_APP_ID}
      app_secret: {FEISHU_SECRET}
      encrypt_key: {ENCRYPT_KEY}
      verification_token: {VERIFICATION_TOKEN}
      bot_open_id: {BOT_OPEN_ID}
  {DINGTALK_APP}:
    tenant: {TENANT}
    platform: dingtalk
    dingtalk: {{app_key: {DT_KEY}, app_secret: {DT_SECRET}, robot_code: {DT_KEY}}}
model:
  providers: [{{name: fake, endpoint: '{llm_url}', model: fake-model}}]
  qps: 100000
  timeout_s: 60
"""
    )
    return path


class Hub:
    """``zhongshu up`` as a process of its own (its stdout and stderr in a log file), stopped
    with SIGTERM like Ctrl-C, then SIGKILL for whatever of its own tree is left."""

    def __init__(self, scratch: Path, env: dict[str, str]) -> None:
        from zhongshu.devstack import free_port

        self.data_dir = scratch / "hub-data"
        self.ready = scratch / "hub.ready"
        self.log_path = scratch / "hub.log"
        self.port = free_port()
        env = {
            k: v
            for k, v in env.items()
            if not k.startswith(("MODEL_", "FEISHU_", "DINGTALK_")) and k != "MAX_CONCURRENT"
        }
        env |= {"ZHONGSHU_HTTP_PORT": str(self.port), "COLUMNS": "200"}
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, extra_env: Mapping[str, str]) -> None:
        command = [sys.executable, "-m", "zhongshu.cli", "up", "--data-dir", str(self.data_dir)]
        command += ["--ready-file", str(self.ready)]
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                command,
                cwd=REPO,
                env={**self.env, **extra_env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )

    def wait_ready(self, timeout: float) -> float:
        began = time.monotonic()
        while not self.ready.exists():
            assert self.proc is not None
            if self.proc.poll() is not None or time.monotonic() - began > timeout:
                raise RuntimeError(f"zhongshu up did not get ready:\n{self.log_tail()}")
            time.sleep(0.1)
        return time.monotonic() - began

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, timeout: float = 60.0) -> None:
        proc = self.proc
        if proc is None:
            return
        tree = _descendants(proc.pid)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log("zhongshu up did not stop in time; killing its processes")
        for pid in tree | _descendants(proc.pid):  # ours: started by this up
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        self.proc = None


def _descendants(pid: int) -> set[int]:
    table = proc_table()
    children: dict[int, list[int]] = defaultdict(list)
    for child, proc in table.items():
        children[proc.ppid].append(child)
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


# ---------------------------------------------------------------- orchestration


def box_state() -> dict[str, Any]:
    """How busy the shared box was before this script started its own processes."""
    state: dict[str, Any] = {"cpus": os.cpu_count(), "loadavg_1m_before": os.getloadavg()[0]}
    with contextlib.suppress(OSError, ValueError, IndexError):
        some = Path("/proc/pressure/io").read_text().splitlines()[0].split()
        state["io_pressure_avg60_before"] = float(some[2].split("=")[1])
    return state


def json_result(child: Child, key: str, timeout: float) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for row in child.results:
            if key in row:
                return row
        if child.proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(
        f"{child.name}: no {key!r} within {timeout:.0f}s (exit {child.proc.poll()})\n"
        f"--- stderr tail ---\n{child.stderr_tail()}"
    )


def phases(a: argparse.Namespace) -> list[dict[str, Any]]:
    q = a.quick
    base = 0.5 if q else 1.0  # the baseline is steady within seconds

    def closed(name: str, platform: str, kind: str, seconds: float) -> dict[str, Any]:
        return {
            "name": name,
            "mode": "closed",
            "platform": platform,
            "kind": kind,
            "window": a.window,
            "seconds": seconds,
            "baseline_seconds": max(2.0, seconds * base),
            "drain_s": a.drain,
            "settle_s": a.settle,
            "targets": [RAW, HUB],
        }

    def at_rate(name: str, kind: str, rate: float, seconds: float) -> dict[str, Any]:
        """Feishu events sent at a fixed rate; latency counted from each one's scheduled time."""
        return {
            "name": f"{name}@{rate:g}",
            "mode": "open",
            "platform": "feishu",
            "kind": kind,
            "rate": rate,
            "conns": a.window,
            "seconds": seconds,
            "baseline_seconds": seconds,
            "drain_s": a.drain,
            "settle_s": a.settle,
            "targets": [RAW, HUB],
        }

    plan = [
        {**closed("warmup", "feishu", "help", 2.0), "window": 8, "baseline_seconds": 1.0},
        closed("feishu.help.throughput", "feishu", "help", a.seconds),
    ]
    for rate in a.rates:
        plan.append(at_rate("feishu.help.latency", "help", rate, a.latency_seconds))
    plan.append(closed("feishu.chat.throughput", "feishu", "chat", a.chat_seconds))
    plan.append(at_rate("feishu.chat.latency", "chat", a.chat_rate, a.chat_latency_seconds))
    plan.append(closed("dingtalk.help.throughput", "dingtalk", "help", a.dingtalk_seconds))
    # No AI card template: the final text alone, through the sessionWebhook, which has no
    # idempotency key (a repeat is a second message in the chat, counted as a duplicate).
    plan.append(closed("dingtalk.chat.throughput", "dingtalk", "chat", a.dingtalk_seconds))
    if a.only:
        plan = [p for p in plan if p["name"] == "warmup" or p["name"].startswith(tuple(a.only))]
    if a.kill:
        for p in plan:
            if p["name"] != "warmup":
                p["kill"] = a.kill
    return plan


def orchestrate(a: argparse.Namespace) -> int:
    stop_on_sigterm()
    dl = Deadline(a.deadline)
    box = box_state()
    began = time.monotonic()
    try:
        with bench_server("always", name="e2e") as (server, scratch):
            log(f"raw baseline's nats-server {server.url} (pid {server.pid}); scratch {scratch}")
            hub = Hub(scratch, child_env())
            try:
                results, ready_s = run_everything(a, server, scratch, hub, dl)
            finally:
                hub.stop()  # before its data directory goes with the scratch directory
                if a.logs:
                    save_logs(scratch, Path(a.logs))
            report(a, results, box, ready_s, time.monotonic() - began)
    except KeyboardInterrupt:
        log("interrupted: everything this script started is stopped")
        return 130
    finally:
        Child.kill_all()
    log(f"done in {time.monotonic() - began:.0f}s")
    return 0


def save_logs(scratch: Path, to: Path) -> None:
    """The role processes' stderr, the hub's output and its servers' logs (``--logs DIR``)."""
    import shutil

    to.mkdir(parents=True, exist_ok=True)
    for path in [*scratch.glob("*.stderr"), scratch / "hub.log", scratch / "zhongshu.yaml"]:
        if path.exists():
            shutil.copy(path, to / path.name)
    servers = scratch / "hub-data" / "logs"
    if servers.is_dir():
        shutil.copytree(servers, to / "hub-servers", dirs_exist_ok=True)
    log(f"logs kept in {to}")


def run_everything(
    a: argparse.Namespace, server: Any, scratch: Path, hub: Hub, dl: Deadline
) -> tuple[dict[tuple[str, str], dict[str, Any]], float]:
    """The fakes, the raw pipeline and the hub started; the driver's phases run; their results."""
    from zhongshu.cli import runstate

    asyncio.run(provision_raw(server.url))
    llm = Child(SCRIPT, ["llm"], log_dir=scratch, name="fake-llm")
    plan_path = scratch / "plan.json"
    drv = Child(SCRIPT, ["driver", "--plan", str(plan_path)], log_dir=scratch, name="driver")
    llm_url = json_result(llm, "url", 60)["url"]
    urls = json_result(drv, "feishu", 60)
    config = hub_config(scratch / "zhongshu.yaml", llm_url)
    hub.start(
        {
            "ZHONGSHU_CONFIG": str(config),
            "FEISHU_BASE_URL": urls["feishu"],
            "DINGTALK_API_URL": urls["dingtalk"],
            "DINGTALK_OAPI_URL": urls["dingtalk"],
            "MODEL_ENDPOINT": llm_url,
            "MODEL_QPS": "100000",
            # The platforms' limits are lifted in the fakes: the notifier's pacing too.
            "ZHONGSHU_FEISHU_APP_API_PER_S": "0",
            "ZHONGSHU_FEISHU_APP_API_PER_MIN": "0",
        }
    )
    ingress = Child(SCRIPT, ["raw-ingress", "--url", server.url], log_dir=scratch,
                    name="raw-ingress")  # fmt: skip
    worker_args = ["raw-worker", "--url", server.url, "--feishu", urls["feishu"]]
    worker = Child(SCRIPT, [*worker_args, "--llm", llm_url], log_dir=scratch,
                   name="raw-worker")  # fmt: skip
    raw_port = json_result(ingress, "port", 60)["port"]
    worker.wait_ready(60)
    ready_s = hub.wait_ready(min(READY_TIMEOUT_S, dl.remaining()))
    log(f"zhongshu up ready in {ready_s:.1f}s (HTTP port {hub.port})")
    state = runstate.read(runstate.services_path(hub.data_dir))
    if state is None or not state.nats_url or hub.proc is None:
        raise RuntimeError("zhongshu up left no run state with its NATS URL")
    plan = {
        "targets": {
            HUB: {
                "port": hub.port,
                "nats_url": state.nats_url,
                "up_pid": hub.proc.pid,
                "data_dir": str(hub.data_dir),
            },
            RAW: {
                "port": raw_port,
                "nats_url": server.url,
                "pids": {
                    "raw-ingress": ingress.proc.pid,
                    "raw-worker": worker.proc.pid,
                    "nats-server": server.pid,
                },
            },
        },
        "phases": phases(a),
    }
    # Renamed into place: the driver polls for the file and must never read half of it.
    written = plan_path.with_suffix(".part")
    written.write_text(json.dumps(plan))
    written.replace(plan_path)
    return collect(drv, hub, dl), ready_s


def collect(drv: Child, hub: Hub, dl: Deadline) -> dict[tuple[str, str], dict[str, Any]]:
    """Each phase's result as the driver prints it, until it says done."""
    results: dict[tuple[str, str], dict[str, Any]] = {}
    seen = 0
    while True:
        rows = drv.results[seen:]
        seen += len(rows)
        for row in rows:
            if row.get("done"):
                return results
            if "phase" in row:
                results[(row["phase"], row["target"])] = row
                log(summary(row))
        if drv.proc.poll() is not None and seen == len(drv.results):
            raise RuntimeError(f"driver exited early:\n{drv.stderr_tail()}")
        if hub.proc is not None and hub.proc.poll() is not None:
            raise RuntimeError(f"zhongshu up exited:\n{hub.log_tail()}")
        dl.check("the driver's phases")
        time.sleep(0.1)


def summary(r: dict[str, Any]) -> str:
    cpu = sum(p["cpu_s_total"] for p in r["processes"].values())
    lat = r["latency_ms"]
    return (
        f"{r['phase']:<26} {r['target']:<3}: {r['answered']}/{r['sent']} answered "
        f"({r['throughput']:.1f}/s in the window, sent {r['sent_rate']:.0f}/s), "
        f"p50 {lat['p50']:.0f} ms p99 {lat['p99']:.0f} ms, lost {r['lost']}, "
        f"dup {r['duplicates']}, cpu {cpu / max(1, r['answered']) * 1000:.2f} ms/event, "
        f"writes {sum(r['writes'].values()) / max(1, r['answered']):.1f}/event, "
        f"drain {r['drain_s']:.1f}s, settled {r['settled']}, % of a core: driver "
        f"{r['driver_cpu_pct_of_core']:.0f}, others {r['others_cpu_pct_of_core']:.0f}"
    )


def per_event(r: dict[str, Any]) -> dict[str, Any]:
    """CPU ms per answered event and % of a core during the sends, per process; JetStream
    writes per answered event, per stream."""
    n = max(1, r["answered"])
    procs = r["processes"]
    return {
        "cpu_ms": {k: v["cpu_s_total"] / n * 1000 for k, v in procs.items() if v["cpu_s_total"]},
        "pct": {k: v["cpu_s_window"] / r["window_s"] * 100 for k, v in procs.items()},
        "rss": {k: v["rss_mb"] for k, v in procs.items()},
        "total_ms": sum(v["cpu_s_total"] for v in procs.values()) / n * 1000,
        "writes": {k: v / n for k, v in r["writes"].items()},
        "writes_total": sum(r["writes"].values()) / n,
        "restarted": sorted(k for k, v in procs.items() if v["restarted"]),
    }


def checks(r: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    return {
        f"{prefix}sent": r["sent"],
        f"{prefix}answered": r["answered"],
        f"{prefix}lost": r["lost"],
        f"{prefix}duplicates": r["duplicates"],
        f"{prefix}not_accepted": r["not_accepted"],
        f"{prefix}first_only": r["first_only"],
        f"{prefix}resends_absorbed": r["resends_absorbed"],
        f"{prefix}platform_errors": r["platform_errors"],
        f"{prefix}http_errors": r["http_errors"],
        f"{prefix}settled": r["settled"],
        f"{prefix}cards_created": r["cards_created"],
        f"{prefix}cards_shown": r["cards_shown"],
        f"{prefix}killed": r.get("killed", {}),
    }


def chat_latency(
    hub: dict[str, Any],
    raw: dict[str, Any],
    h: dict[str, Any],
    b: dict[str, Any],
    run: dict[str, Any],
) -> None:
    """Free text at a fixed rate: when the card first shows, when the final text lands, and the
    gap between the two. The raw worker answers once, with the whole text: its first reply is
    its final text (its gap is 0)."""
    rate = float(hub["rate"])
    series = {
        "first_card": ("latency_first_ms", "the message showing the card, from the send"),
        "final_text": (
            "latency_ms",
            "the card's stream closed after its final text, from the send",
        ),
        "final_after_first": (
            "latency_final_after_first_ms",
            "from the card shown to its final text (the model answers at once)",
        ),
    }
    for label, (column, what) in series.items():
        for q in ("p50", "p99"):
            value, baseline = hub[column][q], raw[column][q]
            extra: dict[str, Any] = {}
            if label == "final_after_first" and q == "p99":
                extra = {
                    "target": f"value <= {P3_FINAL_AFTER_FIRST_MS:g} ms at {rate:g}/s",
                    "met": bool(value <= P3_FINAL_AFTER_FIRST_MS and hub["lost"] == 0),
                }
            figure(
                f"p3.e2e.feishu.chat.latency.{label}.{q}",
                value,
                "ms",
                baseline,
                safe_ratio(value, baseline),
                better="lower",
                rate=rate,
                what=what,
                achieved_send_rate=hub["sent_rate"],
                baseline_achieved_send_rate=raw["sent_rate"],
                max_ms=hub[column]["max"],
                cpu_ms_per_event=h["total_ms"],
                baseline_cpu_ms_per_event=b["total_ms"],
                **run,
                **extra,
            )


def _sorted(d: dict[str, float]) -> dict[str, float]:
    return dict(sorted(d.items(), key=lambda kv: -kv[1]))


def report(
    a: argparse.Namespace,
    results: dict[tuple[str, str], dict[str, Any]],
    box: dict[str, Any],
    ready_s: float,
    elapsed_s: float,
) -> None:
    common = {
        "impl": HUB_DESC,
        "baseline_impl": RAW_DESC,
        "sync": "always",
        "quick": a.quick,
        "up_ready_s": ready_s,
        **box,
    }
    rss_done = False
    for (name, target), hub in results.items():
        if target != HUB or name == "warmup" or (name, RAW) not in results:
            continue
        raw = results[(name, RAW)]
        h, b = per_event(hub), per_event(raw)
        exact = hub["lost"] == 0 and hub["duplicates"] == 0 and hub["not_accepted"] == 0
        run = {
            **common,
            "seconds": hub["window_s"],
            "baseline_seconds": raw["window_s"],
            "driver_cpu_pct_of_core": hub["driver_cpu_pct_of_core"],
            "others_cpu_pct_of_core": hub["others_cpu_pct_of_core"],
            "baseline_others_cpu_pct_of_core": raw["others_cpu_pct_of_core"],
            "steal_pct_of_core": hub["steal_pct_of_core"],
            **checks(hub),
            **checks(raw, "baseline_"),
        }
        if hub["mode"] == "closed":
            unit = "answers/s" if hub["kind"] == "chat" else "replies/s"
            goal = P3_CHAT_RPS if hub["kind"] == "chat" else P3_HELP_RPS
            extra: dict[str, Any] = {}
            if hub["platform"] == "feishu":
                sustained = hub["window_s"] >= 60 or hub["kind"] == "chat"
                extra = {
                    "target": f"value >= {goal:g} {unit}"
                    + (" sustained 60 s" if hub["kind"] == "help" else "")
                    + ", 0 lost, 0 duplicated",
                    "met": bool(hub["throughput"] >= goal and exact and sustained),
                }
            figure(
                f"p3.e2e.{name}",
                hub["throughput"],
                unit,
                raw["throughput"],
                safe_ratio(hub["throughput"], raw["throughput"]),
                **run,
                in_flight=hub["window"],
                p50_ms=hub["latency_ms"]["p50"],
                p99_ms=hub["latency_ms"]["p99"],
                baseline_p50_ms=raw["latency_ms"]["p50"],
                baseline_p99_ms=raw["latency_ms"]["p99"],
                first_reply_p50_ms=hub["latency_first_ms"]["p50"],
                first_reply_p99_ms=hub["latency_first_ms"]["p99"],
                **extra,
            )
        elif hub["kind"] == "chat":
            chat_latency(hub, raw, h, b, run)
        else:
            rate = float(hub["rate"])
            for q in ("p50", "p99"):
                extra = {}
                if q == "p99" and rate == P3_P99_RATE:
                    extra = {
                        "target": f"value <= {P3_P99_MS:g} ms at {P3_P99_RATE:g}/s, 0 lost",
                        "met": bool(hub["latency_ms"]["p99"] <= P3_P99_MS and exact),
                    }
                figure(
                    f"p3.e2e.feishu.help.latency.{q}",
                    hub["latency_ms"][q],
                    "ms",
                    raw["latency_ms"][q],
                    safe_ratio(hub["latency_ms"][q], raw["latency_ms"][q]),
                    better="lower",
                    rate=rate,
                    achieved_send_rate=hub["sent_rate"],
                    baseline_achieved_send_rate=raw["sent_rate"],
                    send_lag_p99_ms=hub["send_lag_ms"]["p99"],
                    max_ms=hub["latency_ms"]["max"],
                    drain_s=hub["drain_s"],
                    cpu_ms_per_event=h["total_ms"],
                    baseline_cpu_ms_per_event=b["total_ms"],
                    **run,
                    **extra,
                )
        base = f"p3.e2e.{name.split('@')[0]}"
        cpu_extra: dict[str, Any] = {"rate": float(hub["rate"])} if hub["mode"] == "open" else {}
        if name == "feishu.help.throughput":
            cpu_extra |= {
                "target": f"value <= {P3_CPU_MS:g} ms over all processes",
                "met": bool(h["total_ms"] <= P3_CPU_MS),
            }
        figure(
            f"{base}.cpu_ms_per_event",
            h["total_ms"],
            "ms",
            b["total_ms"],
            safe_ratio(h["total_ms"], b["total_ms"]),
            better="lower",
            per_process=_sorted(h["cpu_ms"]),
            per_process_pct_of_core=_sorted(h["pct"]),
            baseline_per_process=_sorted(b["cpu_ms"]),
            baseline_per_process_pct_of_core=_sorted(b["pct"]),
            restarted=h["restarted"],
            answered=hub["answered"],
            baseline_answered=raw["answered"],
            throughput=hub["throughput"],
            seconds=hub["total_s"],
            note="CPU from the first send until every answer landed and the consumers were idle,"
            " per answered event; pct_of_core during the sends",
            **common,
            **cpu_extra,
        )
        figure(
            f"{base}.js_writes_per_event",
            h["writes_total"],
            "writes",
            b["writes_total"],
            safe_ratio(h["writes_total"], b["writes_total"]),
            better="lower",
            per_stream=_sorted(h["writes"]),
            baseline_per_stream=_sorted(b["writes"]),
            answered=hub["answered"],
            **({"rate": float(hub["rate"])} if hub["mode"] == "open" else {}),
            note="messages stored per answered event, all streams and KV buckets (last_seq)",
            **common,
        )
        if not rss_done and hub["mode"] == "closed":
            rss_done = True
            figure(
                "p3.e2e.rss_mb",
                sum(h["rss"].values()),
                "MB",
                sum(b["rss"].values()),
                safe_ratio(sum(h["rss"].values()), sum(b["rss"].values())),
                better="lower",
                per_process=_sorted(h["rss"]),
                baseline_per_process=_sorted(b["rss"]),
                after=name,
                note="RSS summed over processes (PostgreSQL's shared memory counted per backend)",
                **common,
            )
    log(f"figures after {elapsed_s:.0f}s")


# ---------------------------------------------------------------- command line


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "role",
        nargs="?",
        default="run",
        choices=["run", "driver", "llm", "raw-ingress", "raw-worker"],
    )
    ap.add_argument("--quick", action="store_true", help="smoke run, about 1.5 minutes")
    ap.add_argument(
        "--sync", default="always", help="nats-server sync modes: the hub runs `always` only"
    )
    ap.add_argument("--seconds", type=float, default=None, help="/help closed loop (60; quick 10)")
    ap.add_argument("--window", type=int, default=64, help="events in flight in a closed loop")
    ap.add_argument("--rates", default=None, help="fixed rates, events/s (100,300,1000; quick "
                    "100,300)")  # fmt: skip
    ap.add_argument("--latency-seconds", type=float, default=None, help="per rate (10; quick 3)")
    ap.add_argument("--chat-seconds", type=float, default=None, help="free text (30; quick 6)")
    ap.add_argument("--chat-rate", type=float, default=10.0, help="free text's fixed rate (10)")
    ap.add_argument("--chat-latency-seconds", type=float, default=None, help="at that rate "
                    "(30; quick 5)")  # fmt: skip
    ap.add_argument("--dingtalk-seconds", type=float, default=None, help="(20; quick 4)")
    ap.add_argument("--drain", type=float, default=None, help="bound on answers after the sends")
    ap.add_argument("--settle", type=float, default=None, help="bound on idle consumers after")
    ap.add_argument("--only", action="append", default=[], help="phase name prefix(es)")
    ap.add_argument("--deadline", type=float, default=None, help="hard bound, whole run (s)")
    ap.add_argument("--logs", default=None, help="keep the processes' logs in this directory")
    ap.add_argument(
        "--kill",
        default="",
        help="services to SIGKILL in every phase, 40%% into its sends (e.g. notifier,router); "
        "`zhongshu up` restarts them and the figures must still show 0 lost, 0 duplicated",
    )
    # options of the role processes (set by the orchestrator)
    ap.add_argument("--plan", default="")
    ap.add_argument("--url", default="")
    ap.add_argument("--feishu", default="")
    ap.add_argument("--llm", default="")
    a = ap.parse_args(argv)
    q = a.quick
    a.seconds = a.seconds or (10.0 if q else 60.0)
    a.latency_seconds = a.latency_seconds or (3.0 if q else 10.0)
    a.chat_seconds = a.chat_seconds or (6.0 if q else 30.0)
    a.chat_latency_seconds = a.chat_latency_seconds or (5.0 if q else 30.0)
    a.dingtalk_seconds = a.dingtalk_seconds or (4.0 if q else 20.0)
    a.kill = [name.strip() for name in a.kill.split(",") if name.strip()]
    unknown = sorted(set(a.kill) - KILLABLE)
    if unknown:
        ap.error(f"--kill: not a service of the hub: {', '.join(unknown)} "
                 f"(one of {', '.join(sorted(KILLABLE))})")  # fmt: skip
    # A killed consumer's unacked messages come back after ack_wait (30 s): wait that long.
    a.drain = a.drain or (90.0 if a.kill else 30.0 if q else 180.0)
    a.settle = a.settle or (10.0 if q else 30.0)
    a.deadline = a.deadline or (600.0 if q else 2400.0)
    rates = a.rates or ("100,300" if q else "100,300,1000")
    a.rates = [float(r) for r in rates.split(",") if r.strip()]
    if a.role in ("raw-ingress", "raw-worker") and not a.url.startswith("nats://127.0.0.1:"):
        ap.error("the raw pipeline talks only to a bench server on nats://127.0.0.1")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    if a.role == "run":
        if "always" not in [m.strip() for m in a.sync.split(",")]:
            # `zhongshu up` runs nats-server with sync_interval always, as it ships
            print(json.dumps({"bench": "p3.e2e", "skipped": f"sync {a.sync}: hub runs always"}))
            return 0
        return orchestrate(a)
    {
        "driver": role_driver,
        "llm": role_llm,
        "raw-ingress": role_raw_ingress,
        "raw-worker": role_raw_worker,
    }[a.role](a)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
