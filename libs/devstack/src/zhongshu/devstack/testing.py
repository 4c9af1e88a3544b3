"""pytest plugin: real nats-server, PostgreSQL and Redis for tests (no mocks, no Docker), and what
the tests of every package share.

Registered by the workspace's root ``conftest.py``:
``pytest_plugins = ["zhongshu.devstack.testing"]``.

Session-scoped, started only when a test asks for them (all three at once, in about a second):
``embedded_stack``, ``nats_url``, ``postgres_url``, ``redis_url`` and ``nats_server`` (the
:class:`NatsServer` of the session; do not kill it, other tests share it). A URL given by
``ZHONGSHU_NATS_URL`` / ``ZHONGSHU_POSTGRES_URL`` / ``ZHONGSHU_REDIS_URL`` replaces the embedded
server (``nats_server`` then skips the test).

Function-scoped: ``nc`` (a connected ``nats.aio.client.Client``), ``js`` (its JetStream context),
``redis`` (a ``redis.asyncio.Redis`` client of the session's Redis) and ``private_nats_server`` (a
nats-server of the test's own under ``tmp_path``, which the test may kill and restart).

``recorded_spans``: every span the test's code records (this process's tracer provider, every
trace sampled while the test runs), as an ``InMemorySpanExporter``.

Helpers: :func:`eventually` (poll until true), :func:`drained` (a durable consumer has nothing
pending), :func:`collect` (what a subject holds) and :func:`provision_all`.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nats
import nats.errors
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from redis.asyncio import Redis

from zhongshu.devstack.nats import NatsServer
from zhongshu.devstack.stack import EmbeddedStack

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from zhongshu.runtime.service import Service

__all__ = [
    "StartService",
    "collect",
    "drained",
    "embedded_stack",
    "eventually",
    "js",
    "nats_server",
    "nats_url",
    "nc",
    "postgres_url",
    "private_nats_server",
    "provision_all",
    "provisioned_nats_url",
    "recorded_spans",
    "redis",
    "redis_url",
    "server_dir",
]

StartService = Callable[..., Awaitable["Service"]]
"""The type of a fixture that starts a service in the test's process (and stops it after)."""


@contextlib.contextmanager
def _server_dir(name: str) -> Iterator[Path]:
    """A directory for server data outside pytest's base temp: as root, PostgreSQL runs as
    another user that must traverse the path, and a concurrent pytest session re-tightens the
    permissions of ``/tmp/pytest-of-root`` at its start."""
    path = Path(tempfile.mkdtemp(prefix=f"zhongshu-{name}-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def server_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """Like ``tmp_path``, for tests that start PostgreSQL themselves."""
    with _server_dir(request.node.name[:40]) as path:
        yield path


@pytest.fixture(scope="session")
def embedded_stack() -> Iterator[EmbeddedStack]:
    """nats-server, PostgreSQL and Redis for the whole session, under a temporary directory."""
    with _server_dir("stack") as path, EmbeddedStack(path) as stack:
        yield stack


def _required(url: str | None, name: str) -> str:
    if url is None:  # pragma: no cover - the session stack enables every component
        raise RuntimeError(f"the embedded stack has no {name}")
    return url


@pytest.fixture(scope="session")
def nats_url(embedded_stack: EmbeddedStack) -> str:
    return _required(embedded_stack.nats_url, "nats")


@pytest.fixture(scope="session")
def postgres_url(embedded_stack: EmbeddedStack) -> str:
    return _required(embedded_stack.postgres_url, "postgres")


@pytest.fixture(scope="session")
def redis_url(embedded_stack: EmbeddedStack) -> str:
    return _required(embedded_stack.redis_url, "redis")


@pytest.fixture(scope="session")
def nats_server(embedded_stack: EmbeddedStack) -> NatsServer:
    """The session's nats-server (shared: use ``private_nats_server`` to kill or restart one)."""
    if embedded_stack.nats_server is None:
        pytest.skip("nats is given by ZHONGSHU_NATS_URL: there is no embedded nats-server")
    return embedded_stack.nats_server


@pytest.fixture(scope="session")
def provisioned_nats_url(nats_url: str) -> str:
    """The session's NATS URL once every stream and KV bucket of contracts exists there."""
    asyncio.run(provision_all(nats_url))
    return nats_url


async def provision_all(url: str) -> None:
    """Create every stream and bucket of contracts on the server at ``url`` (tests, benches)."""
    from zhongshu.contracts.streams import KV_BUCKETS, STREAMS
    from zhongshu.runtime import bus
    from zhongshu.runtime.provision import provision, refused

    client = await bus.connect(url, name="pytest-provision")
    try:
        outcomes = await provision(bus.jetstream(client), STREAMS, KV_BUCKETS)
        if refused(outcomes):
            raise RuntimeError(f"provisioning refused: {refused(outcomes)}")
    finally:
        await client.close()


@pytest.fixture
def private_nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server of this test alone (JetStream, fsync always), stopped after it."""
    with NatsServer(tmp_path / "nats", log_path=tmp_path / "logs" / "nats.log") as server:
        yield server


@pytest_asyncio.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    """A NATS connection to the session's server, closed after the test."""
    client = await nats.connect(nats_url, name="pytest", connect_timeout=5)
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), timeout=5)


@pytest_asyncio.fixture
async def js(nc: Client) -> JetStreamContext:
    """The JetStream context of ``nc``."""
    return nc.jetstream()


@pytest_asyncio.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """A client of the session's Redis, closed after the test (keys are shared by the session:
    make them unique to the test)."""
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def recorded_spans() -> Iterator[InMemorySpanExporter]:
    """The spans recorded while the test runs, every new trace sampled meanwhile."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from zhongshu.runtime import telemetry

    class WhileTheTestRuns(SpanProcessor):
        # The SDK cannot remove a processor: this one stops listening after its test.
        active = True

        def on_end(self, span: ReadableSpan) -> None:
            if self.active:
                exporter.export([span])

    telemetry.setup_tracing("tests")
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    listener = WhileTheTestRuns()
    provider.add_span_processor(listener)
    ratio = telemetry.sample_ratio()
    telemetry.set_sample_ratio(1.0)
    try:
        yield exporter
    finally:
        listener.active = False
        telemetry.set_sample_ratio(ratio)


async def collect(
    js: JetStreamContext, subject: str, *, count: int | None = None, within_s: float = 10.0
) -> list[Msg]:
    """Every message stored on ``subject`` (read with an ephemeral ordered consumer): waits up to
    ``within_s`` for ``count`` messages, or until the subject is idle for a moment."""
    sub = await js.subscribe(subject, ordered_consumer=True)
    found: list[Msg] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    try:
        while count is None or len(found) < count:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            wait = remaining if count is not None else min(remaining, 0.5)
            try:
                found.append(await sub.next_msg(timeout=wait))
            except (TimeoutError, nats.errors.TimeoutError):
                if count is None:
                    break
    finally:
        await sub.unsubscribe()
    return found


async def eventually(
    predicate: Callable[[], Any], what: str = "the condition", within_s: float = 10.0
) -> Any:
    """Poll a sync or async predicate until it returns something truthy, and return that;
    fail the test after ``within_s`` (a bound for a hung test, not a timing assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        assert loop.time() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.05)


async def drained(
    js: JetStreamContext, stream: str, durable: str, *, within_s: float = 30.0
) -> None:
    """Wait until the durable consumer ``durable`` of ``stream`` has nothing pending and nothing
    unacknowledged; fail the test after ``within_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        info = await js.consumer_info(stream, durable)
        if info.num_pending == 0 and info.num_ack_pending == 0:
            return
        assert loop.time() < deadline, f"{durable} still has work: {info}"
        await asyncio.sleep(0.05)


def localhost_certificate(folder: Path) -> tuple[Path, Path, Path]:
    """A certificate for ``localhost`` from a throwaway CA: (cert, key, CA) PEM files in
    ``folder``, for TLS tests of the edge."""
    import trustme

    ca = trustme.CA()
    issued = ca.issue_cert("localhost")
    cert, key, ca_file = folder / "cert.pem", folder / "key.pem", folder / "ca.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    return cert, key, ca_file
