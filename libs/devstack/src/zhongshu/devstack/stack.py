"""The embedded stack: real nats-server, PostgreSQL and Redis from PyPI wheels, no Docker.

`zhongshu up` runs it under ``./data``; the pytest plugin in :mod:`zhongshu.devstack.testing`
runs it under temporary directories. Every server listens on a free ``127.0.0.1`` port, keeps its
data in its own directory and writes its output to ``<data>/logs/<name>.log``: see
:mod:`~zhongshu.devstack.nats`, :mod:`~zhongshu.devstack.postgres` and
:mod:`~zhongshu.devstack.redis` for each server, :mod:`~zhongshu.devstack.process` for what they
share.

A dependency given by URL in the environment (``ZHONGSHU_NATS_URL``, ``ZHONGSHU_POSTGRES_URL``,
``ZHONGSHU_REDIS_URL``) is used as is and not started.
"""

from __future__ import annotations

import atexit
import os
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Self

from zhongshu.devstack.nats import NatsServer
from zhongshu.devstack.postgres import PostgresServer
from zhongshu.devstack.process import Managed, Server, StackError
from zhongshu.devstack.redis import RedisServer

__all__ = ["NATS_URL_ENV", "POSTGRES_URL_ENV", "REDIS_URL_ENV", "EmbeddedStack"]

NATS_URL_ENV = "ZHONGSHU_NATS_URL"
POSTGRES_URL_ENV = "ZHONGSHU_POSTGRES_URL"
REDIS_URL_ENV = "ZHONGSHU_REDIS_URL"


class EmbeddedStack(Managed):
    """nats-server, PostgreSQL and Redis under `data_dir` (``nats/``, ``postgres/``, ``redis/``,
    ``logs/``), started in parallel.

    A component whose URL is in `environ` (default ``os.environ``: ``ZHONGSHU_NATS_URL``,
    ``ZHONGSHU_POSTGRES_URL``, ``ZHONGSHU_REDIS_URL``) is not started; its URL is passed through.
    A disabled component has no URL (None).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        nats: bool = True,
        postgres: bool = True,
        redis: bool = True,
        sync_always: bool = True,
        startup_timeout: float = 30.0,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        env = os.environ if environ is None else environ
        logs = self.data_dir / "logs"

        self.nats_server: NatsServer | None = None
        self.postgres_server: PostgresServer | None = None
        self.redis_server: RedisServer | None = None
        self._external: dict[str, str] = {}

        if nats:
            if env.get(NATS_URL_ENV):
                self._external[NATS_URL_ENV] = env[NATS_URL_ENV]
            else:
                self.nats_server = NatsServer(
                    self.data_dir / "nats",
                    sync_always=sync_always,
                    log_path=logs / "nats.log",
                    startup_timeout=startup_timeout,
                )
        if postgres:
            if env.get(POSTGRES_URL_ENV):
                self._external[POSTGRES_URL_ENV] = env[POSTGRES_URL_ENV]
            else:
                self.postgres_server = PostgresServer(
                    self.data_dir / "postgres",
                    log_path=logs / "postgres.log",
                    startup_timeout=startup_timeout,
                )
        if redis:
            if env.get(REDIS_URL_ENV):
                self._external[REDIS_URL_ENV] = env[REDIS_URL_ENV]
            else:
                self.redis_server = RedisServer(
                    self.data_dir / "redis",
                    log_path=logs / "redis.log",
                    startup_timeout=startup_timeout,
                )
        self._started = False
        self.start_seconds: float | None = None

    @property
    def servers(self) -> list[Server]:
        """The servers this stack runs itself (not those given by URL)."""
        candidates: list[Server | None] = [
            self.nats_server,
            self.postgres_server,
            self.redis_server,
        ]
        return [s for s in candidates if s is not None]

    def _url(self, env_name: str, server: Server | None) -> str | None:
        if env_name in self._external:
            return self._external[env_name]
        if server is None:
            return None
        return server.url  # StackError if never started

    @property
    def nats_url(self) -> str | None:
        return self._url(NATS_URL_ENV, self.nats_server)

    @property
    def postgres_url(self) -> str | None:
        return self._url(POSTGRES_URL_ENV, self.postgres_server)

    @property
    def redis_url(self) -> str | None:
        return self._url(REDIS_URL_ENV, self.redis_server)

    def env(self) -> dict[str, str]:
        """``ZHONGSHU_*_URL`` for child processes (only the enabled components)."""
        pairs = {
            NATS_URL_ENV: self.nats_url,
            POSTGRES_URL_ENV: self.postgres_url,
            REDIS_URL_ENV: self.redis_url,
        }
        return {k: v for k, v in pairs.items() if v is not None}

    def start(self) -> Self:
        """Start every server in parallel; on any failure stop the others and raise StackError."""
        began = time.monotonic()
        servers = self.servers
        errors: list[BaseException] = []
        if servers:
            with ThreadPoolExecutor(len(servers), thread_name_prefix="zhongshu-stack") as pool:
                futures = [pool.submit(s.start) for s in servers]
                for future in futures:
                    exc = future.exception()
                    if exc is not None:
                        errors.append(exc)
        if errors:
            self.stop()
            if len(errors) == 1:
                raise errors[0]
            raise StackError("\n\n".join(str(e) for e in errors)) from errors[0]
        self.start_seconds = time.monotonic() - began
        if not self._started:
            self._started = True
            atexit.register(self.stop)
        return self

    def stop(self) -> None:
        """Stop every server (in parallel). Idempotent; never hangs."""
        servers = self.servers  # also those that died: stop() releases their data dir
        if servers:
            with ThreadPoolExecutor(len(servers), thread_name_prefix="zhongshu-stack") as pool:
                list(pool.map(lambda s: s.stop(), servers))
        if self._started:
            self._started = False
            atexit.unregister(self.stop)

    def __iter__(self) -> Iterator[Server]:
        return iter(self.servers)
