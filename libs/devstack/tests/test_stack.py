"""The embedded stack: real servers from wheels, on free ports, under a data dir."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import asyncpg
import nats
import pytest
import redis.asyncio as aioredis
from nats.aio.client import Client
from nats.js import JetStreamContext

from zhongshu.devstack import (
    NATS_URL_ENV,
    POSTGRES_URL_ENV,
    REDIS_URL_ENV,
    EmbeddedStack,
    NatsServer,
    PostgresServer,
    RedisServer,
    StackError,
)


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for a reaper counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return any(
        _alive(int(p.name))
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and _pgid_of(int(p.name)) == pgid
    )


def _pgid_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, ValueError, IndexError):
        return None


def _children() -> set[int]:
    me = os.getpid()
    found = set()
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == me and _alive(int(p.name)):
            found.add(int(p.name))
    return found


def _wait_dead(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _varz(server: NatsServer) -> dict[str, object]:
    with urllib.request.urlopen(f"{server.monitor_url}/varz", timeout=5) as response:
        varz: dict[str, object] = json.load(response)
    return varz


async def test_stack_starts_three_servers_that_answer_and_stop_leaves_no_process(
    server_dir: Path,
) -> None:
    stack = EmbeddedStack(server_dir)
    stack.start()
    try:
        assert [s.name for s in stack.servers] == ["nats", "postgres", "redis"]
        assert stack.env() == {
            NATS_URL_ENV: stack.nats_url,
            POSTGRES_URL_ENV: stack.postgres_url,
            REDIS_URL_ENV: stack.redis_url,
        }
        assert stack.postgres_url is not None
        assert stack.postgres_url.startswith("postgresql://postgres@127.0.0.1:")
        assert stack.postgres_url.endswith("/zhongshu")

        nc = await nats.connect(stack.nats_url)
        try:
            js = nc.jetstream()
            await js.add_stream(name="SMOKE", subjects=["smoke.>"])
            ack = await js.publish("smoke.one", b"hello")
            assert (ack.stream, ack.seq) == ("SMOKE", 1)
        finally:
            await nc.close()

        conn = await asyncpg.connect(stack.postgres_url)
        try:
            assert await conn.fetchval("SELECT 1") == 1
            assert await conn.fetchval("SELECT current_database()") == "zhongshu"
        finally:
            await conn.close()

        r = aioredis.from_url(stack.redis_url)
        try:
            assert await r.ping() is True
        finally:
            await r.aclose()

        for sub in ("nats", "postgres", "redis", "logs"):
            assert (server_dir / sub).is_dir()
        pids = [s.pid for s in stack.servers]
    finally:
        stack.stop()

    for pid in pids:
        assert pid is not None
        assert not _alive(pid)
        assert not _group_alive(pid)  # postgres backends too: each server leads its group
    assert all(s.pid is None for s in stack.servers)
    stack.stop()  # idempotent


async def test_session_fixtures_connect_to_servers_that_fsync_before_ack(
    nc: Client,
    js: JetStreamContext,
    nats_server: NatsServer,
    postgres_url: str,
    redis_url: str,
) -> None:
    await js.add_stream(name="FIXTURES", subjects=["fixtures.>"])
    ack = await js.publish("fixtures.one", b"x")
    assert ack.stream == "FIXTURES"
    assert nc.connected_url is not None
    assert nc.connected_url.port == nats_server.port

    jetstream = _varz(nats_server)["jetstream"]
    assert isinstance(jetstream, dict)
    assert jetstream["config"]["sync_always"] is True
    assert "sync_interval: always" in nats_server.config_path.read_text()

    conn = await asyncpg.connect(postgres_url)
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()
    r = aioredis.from_url(redis_url)
    try:
        assert await r.ping() is True
    finally:
        await r.aclose()


async def test_jetstream_message_acked_before_sigkill_is_there_after_restart(
    private_nats_server: NatsServer,
) -> None:
    server = private_nats_server
    nc = await nats.connect(server.url, allow_reconnect=False)
    try:
        js = nc.jetstream()
        await js.add_stream(name="DURABLE", subjects=["durable.>"])
        acks = [await js.publish("durable.x", f"m{i}".encode()) for i in range(10)]
        assert [a.seq for a in acks] == list(range(1, 11))

        pid, port = server.pid, server.port
        assert pid is not None
        server.kill()
        assert not _alive(pid)
        assert server.pid is None
    finally:
        await nc.close()

    server.restart()
    assert server.port == port
    assert server.pid not in (None, pid)

    nc = await nats.connect(server.url)
    try:
        js = nc.jetstream()
        info = await js.stream_info("DURABLE")
        assert info.state.messages == 10
        msg = await js.get_msg("DURABLE", 10)
        assert msg.data == b"m9"
    finally:
        await nc.close()


@pytest.mark.parametrize("kind", ["postgres", "redis"])
async def test_restart_keeps_port_and_data(server_dir: Path, kind: str) -> None:
    if kind == "postgres":
        pg = PostgresServer(server_dir / "postgres").start()
        try:
            conn = await asyncpg.connect(pg.url)
            await conn.execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('kept')")
            await conn.close()
            port = pg.port
            pg.restart()
            assert pg.port == port
            conn = await asyncpg.connect(pg.url)
            assert await conn.fetchval("SELECT v FROM t") == "kept"
            await conn.close()
        finally:
            pg.stop()
    else:
        rs = RedisServer(server_dir / "redis").start()
        try:
            r = aioredis.from_url(rs.url)
            await r.set("k", "kept")
            await r.aclose()
            port = rs.port
            rs.restart()
            assert rs.port == port
            r = aioredis.from_url(rs.url)
            assert await r.get("k") == b"kept"
            await r.aclose()
        finally:
            rs.stop()


def test_url_from_environment_is_used_instead_of_starting_a_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(NATS_URL_ENV, "nats://nats.example:4222")
    monkeypatch.setenv(POSTGRES_URL_ENV, "postgresql://u@db.example:5432/zhongshu")
    monkeypatch.setenv(REDIS_URL_ENV, "redis://cache.example:6379/0")
    before = _children()

    with EmbeddedStack(tmp_path) as stack:
        assert stack.servers == []
        assert _children() == before
        assert stack.nats_url == "nats://nats.example:4222"
        assert stack.env() == {
            NATS_URL_ENV: "nats://nats.example:4222",
            POSTGRES_URL_ENV: "postgresql://u@db.example:5432/zhongshu",
            REDIS_URL_ENV: "redis://cache.example:6379/0",
        }
    assert not (tmp_path / "nats").exists()
    assert not (tmp_path / "postgres").exists()


def test_disabled_component_has_no_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NATS_URL_ENV, "nats://nats.example:4222")
    stack = EmbeddedStack(tmp_path, postgres=False, redis=False)
    assert stack.servers == []
    assert stack.postgres_url is None
    assert stack.redis_url is None
    assert stack.env() == {NATS_URL_ENV: "nats://nats.example:4222"}


@pytest.mark.parametrize("component", ["nats", "postgres", "redis"])
def test_file_where_the_data_dir_should_be_gives_stack_error_naming_component_and_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, component: str
) -> None:
    for env in (NATS_URL_ENV, POSTGRES_URL_ENV, REDIS_URL_ENV):
        monkeypatch.delenv(env, raising=False)
    (tmp_path / component).write_text("not a directory")
    enabled = {name: name == component for name in ("nats", "postgres", "redis")}
    before = _children()

    with pytest.raises(StackError) as caught:
        EmbeddedStack(tmp_path, **enabled).start()

    message = str(caught.value)
    assert message.startswith(f"{component}:")
    assert str(tmp_path / component) in message
    assert _children() == before


def test_data_dir_in_use_by_a_running_server_gives_stack_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(NatsServer, "lock_wait", 0.2)
    with NatsServer(tmp_path / "nats") as first:
        second = NatsServer(tmp_path / "nats")
        with pytest.raises(StackError, match=r"^nats: data dir is in use") as caught:
            second.start()
        assert str(tmp_path / "nats") in str(caught.value)
        assert second.pid is None
        assert first.running
    with NatsServer(tmp_path / "nats"):  # free again once the first one stopped
        pass


def test_port_in_use_gives_stack_error_with_port_and_log_tail(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = NatsServer(tmp_path / "nats", port=port, startup_timeout=10)
        with pytest.raises(StackError) as caught:
            server.start()

    message = str(caught.value)
    assert message.startswith("nats:")
    assert f"port {port}" in message
    assert str(tmp_path / "nats") in message
    assert "address already in use" in message.lower()  # from the server's log
    assert server.pid is None


def test_servers_die_when_the_python_process_is_sigkilled(server_dir: Path) -> None:
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from zhongshu.devstack import EmbeddedStack\n"
        "stack = EmbeddedStack(Path(sys.argv[1]), postgres=False).start()\n"
        "print(' '.join(str(s.pid) for s in stack.servers), flush=True)\n"
        "time.sleep(60)\n"
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in (NATS_URL_ENV, POSTGRES_URL_ENV, REDIS_URL_ENV)
    }
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(server_dir)],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert child.stdout is not None
        pids = [int(p) for p in child.stdout.readline().split()]
        assert len(pids) == 2
        assert all(_alive(p) for p in pids)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        assert all(_wait_dead(p) for p in pids)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
