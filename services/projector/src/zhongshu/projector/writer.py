"""Writing a stream's changes: one transaction per fetched batch, in stream order.

The consume loop hands every message of a fetched batch to the handler, then waits on the
futures its handler left in ``delivery.pending`` before it acks. The handler (``LiveWriter``)
only plans the message and queues it with such a future, so by the time the loop waits, the whole
batch is queued and ``_drain`` writes it in one transaction: one commit per batch instead of one
per message, and an ack only after the commit (ack after effect).

Order matters, because a row applies only a newer sequence than its own: a message written after
a newer one of the same row is lost. So a write that fails for a reason that passes (Postgres
restarting, a deadlock) is retried in place until it succeeds, keeping the messages alive,
instead of being nacked and overtaken by the next batch. A message whose write fails for any
other reason is a bug or bad data: the batch is redone one message per savepoint, and only that
message fails, as a ``PermanentError`` (straight to the DLQ, with an alert).

Every batch holds a shared advisory lock on its stream for the length of its transaction; a
rebuild holds it exclusively, so the live writer waits while a stream is rebuilt under it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import asyncpg

from zhongshu.projector import metrics
from zhongshu.projector.db import connection
from zhongshu.projector.hot import HotTier
from zhongshu.projector.projections import Applied, Projection
from zhongshu.projector.records import Record
from zhongshu.runtime.cancellation import stop_task
from zhongshu.runtime.consumer import Delivery
from zhongshu.runtime.errors import PermanentError
from zhongshu.runtime.periodic import Periodic

log = logging.getLogger("zhongshu.projector.writer")
T = TypeVar("T")

LOCK_SHARED = (
    "SELECT pg_advisory_xact_lock_shared(hashtextextended('zhongshu.projector.' || $1, 0))"
)
LOCK_EXCLUSIVE = "SELECT pg_advisory_xact_lock(hashtextextended('zhongshu.projector.' || $1, 0))"

ADVANCE = """
INSERT INTO projection_offsets AS o (stream, last_seq, updated_at) VALUES ($1, $2, now())
ON CONFLICT (stream) DO UPDATE SET last_seq = EXCLUDED.last_seq, updated_at = EXCLUDED.updated_at
WHERE o.last_seq < EXCLUDED.last_seq
"""

RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
HOT_ATTEMPTS = 3


def transient(exc: BaseException) -> bool:
    """Whether trying the same write again later may succeed."""
    if isinstance(
        exc,
        asyncpg.PostgresConnectionError
        | asyncpg.exceptions.OperatorInterventionError
        | asyncpg.exceptions.InsufficientResourcesError
        | asyncpg.exceptions.TransactionRollbackError
        | OSError
        | TimeoutError,
    ):
        return True
    # asyncpg also reports programming errors as InterfaceError; only a lost connection passes.
    return isinstance(exc, asyncpg.InterfaceError) and "connection" in str(exc).lower()


@dataclass
class Planned:
    """A message and the changes it asks for."""

    seq: int
    changes: Sequence[Any]
    error: BaseException | None = None


@dataclass
class BatchResult:
    applied: Applied = field(default_factory=Applied)
    failed: int = 0


async def apply_batch(
    conn: asyncpg.Connection, projection: Projection[Any], batch: Sequence[Planned]
) -> BatchResult:
    """Apply a batch inside the caller's transaction: all in one savepoint, or, when that fails
    for a reason that will not pass, one savepoint per message so only the bad one fails (its
    ``error`` is set). Transient errors propagate: the caller retries the whole transaction."""
    try:
        async with conn.transaction():
            applied = Applied()
            await projection.apply_all(conn, [c for item in batch for c in item.changes], applied)
            return BatchResult(applied)
    except Exception as exc:
        if transient(exc):
            raise
        log.warning(
            "batch on %s failed (%r); applying one message at a time", projection.stream, exc
        )
    result = BatchResult()
    for item in batch:
        try:
            async with conn.transaction():
                one = Applied()
                await projection.apply_all(conn, item.changes, one)
            result.applied.merge(one)
        except Exception as exc:
            if transient(exc):
                raise
            item.error = exc
            result.failed += 1
            log.error("%s seq %d cannot be projected: %r", projection.stream, item.seq, exc)
    return result


async def advance(conn: asyncpg.Connection, stream: str, seq: int) -> None:
    """Record ``seq`` as applied for ``stream`` (never moves back)."""
    await conn.execute(ADVANCE, stream, seq)


async def retrying(what: str, attempt: Callable[[], Awaitable[T]]) -> T:
    """Run ``attempt()`` until it succeeds or fails for a reason that will not pass."""
    for n in itertools.count():
        try:
            return await attempt()
        except Exception as exc:
            if not transient(exc):
                raise
            delay = RETRY_DELAYS_S[min(n, len(RETRY_DELAYS_S) - 1)]
            metrics.WRITE_RETRIES.labels(what).inc()
            log.warning("%s: %r; retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(eq=False)
class _Queued:
    planned: Planned
    delivery: Delivery
    done: asyncio.Future[Any]


class LiveWriter:
    """The handler of one stream's durable consumer (see the module docstring)."""

    def __init__(
        self,
        projection: Projection[Any],
        pool: asyncpg.Pool,
        hot: HotTier | None,
        *,
        ack_wait_s: float,
    ) -> None:
        self.projection = projection
        self._pool = pool
        self._hot = hot
        self._ack_wait_s = ack_wait_s
        self._queue: list[_Queued] = []
        self._drainer: asyncio.Task[None] | None = None

    async def handle(self, _raw: bytes, delivery: Delivery) -> None:
        """Plan and queue; never awaits, so the whole fetched batch is queued before it is
        written. A message no retry can read raises here, and goes to the DLQ."""
        record = Record.of(self.projection.stream, delivery.msg)
        planned = Planned(record.seq, self.projection.plan(record))
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        delivery.pending.append(done)
        self._queue.append(_Queued(planned, delivery, done))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(
                self._drain(), name=f"write:{self.projection.stream}"
            )

    async def close(self) -> None:
        """Stop writing (shutdown): queued messages are left unacked, for redelivery."""
        await stop_task(self._drainer)
        for queued in self._queue:
            if not queued.done.done():
                queued.done.set_exception(RuntimeError("projector stopping"))
        self._queue.clear()

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            keepalive = Periodic(
                f"keepalive:{self.projection.stream}",
                self._ack_wait_s / 3,
                partial(self._keep_alive, batch),
                wait_first=True,
            )
            keepalive.start()
            try:
                await self._write(batch)
            except asyncio.CancelledError:
                self._queue = batch + self._queue
                raise
            except Exception as exc:  # a bug outside any one message: let them all be retried
                log.exception("writing %s failed", self.projection.stream)
                for queued in batch:
                    if not queued.done.done():
                        queued.done.set_exception(exc)
            finally:
                await keepalive.stop()

    async def _write(self, batch: list[_Queued]) -> None:
        stream = self.projection.stream
        planned = [q.planned for q in batch]

        async def transaction() -> BatchResult:
            for item in planned:
                item.error = None
            async with connection(self._pool) as conn, conn.transaction():
                await conn.execute(LOCK_SHARED, stream)
                result = await apply_batch(conn, self.projection, planned)
                await advance(conn, stream, max(item.seq for item in planned))
                return result

        result = await retrying(f"write {stream}", transaction)
        metrics.record_applied(stream, max(item.seq for item in planned), result.applied.rows)
        if result.applied.statuses and self._hot is not None:
            await self._refresh_hot(result.applied)
        for queued in batch:
            error = queued.planned.error
            if error is None:
                queued.done.set_result(None)
            else:
                queued.done.set_exception(PermanentError(f"cannot be projected: {error!r}"))

    async def _refresh_hot(self, applied: Applied) -> None:
        """Best effort: the hot tier is a cache the gateway falls back from, so Redis being
        down must not stall the warm tier. Failures are logged and counted."""
        assert self._hot is not None
        for attempt in range(HOT_ATTEMPTS):
            try:
                accepted = await self._hot.put(applied.statuses)
                metrics.HOT_WRITES.labels("written").inc(accepted)
                return
            except Exception as exc:
                log.warning("hot tier write failed (%d/%d): %r", attempt + 1, HOT_ATTEMPTS, exc)
                await asyncio.sleep(RETRY_DELAYS_S[attempt])
        metrics.HOT_WRITES.labels("failed").inc(len(applied.statuses))

    @staticmethod
    async def _keep_alive(batch: list[_Queued]) -> None:
        """While a write waits (Postgres down, a rebuild holding the stream), reset ack_wait so
        the messages are not redelivered to another replica meanwhile."""
        for queued in batch:
            with contextlib.suppress(Exception):
                await queued.delivery.in_progress()
