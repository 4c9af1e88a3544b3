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
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
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
            return BatchResult(await apply_whole(conn, projection, batch))
    except Exception as exc:
        if transient(exc):
            raise
        _split(projection, exc)
    return await apply_each(conn, projection, batch)


async def apply_whole(
    conn: asyncpg.Connection, projection: Projection[Any], batch: Sequence[Planned]
) -> Applied:
    """Every change of the batch, in order, with no savepoint of its own."""
    applied = Applied()
    await projection.apply_all(conn, [c for item in batch for c in item.changes], applied)
    return applied


def _split(projection: Projection[Any], exc: BaseException) -> None:
    log.warning("batch on %s failed (%r); applying one message at a time", projection.stream, exc)


async def apply_each(
    conn: asyncpg.Connection, projection: Projection[Any], batch: Sequence[Planned]
) -> BatchResult:
    """One savepoint per message, inside the caller's transaction: a message that fails for a
    reason that will not pass gets its ``error`` set, the others apply."""
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


# The live writer's transactions send their fixed statements as text in the simple protocol,
# which takes several statements per round trip: ``BEGIN`` rides with the lock and ``COMMIT``
# with the offset. Each round trip costs the projector and PostgreSQL more CPU than parsing
# these short statements; the values are a stream name (checked) and an integer.
_STREAM_NAME = re.compile(r"[A-Za-z0-9_-]+")


def _stream_literal(stream: str) -> str:
    if not _STREAM_NAME.fullmatch(stream):
        raise ValueError(f"not a stream name: {stream!r}")
    return f"'{stream}'"


def begin_locked(stream: str) -> str:
    """``BEGIN`` and ``LOCK_SHARED`` on ``stream``, as one simple-protocol query."""
    key = f"'zhongshu.projector.' || {_stream_literal(stream)}"
    return f"BEGIN; SELECT pg_advisory_xact_lock_shared(hashtextextended({key}, 0))"


def advance_and_commit(stream: str, seq: int) -> str:
    """``ADVANCE`` to ``seq`` and ``COMMIT``, as one simple-protocol query."""
    advance_sql = ADVANCE.replace("$1", _stream_literal(stream)).replace("$2", str(int(seq)))
    return f"{advance_sql.strip()};\nCOMMIT"


async def _abandon(conn: asyncpg.Connection) -> None:
    """Roll back a transaction left open by an error, so the connection goes back to the pool
    clean (a connection that is lost or busy is dealt with by the pool)."""
    if not conn.is_closed() and conn.is_in_transaction():
        with contextlib.suppress(Exception):
            await conn.execute("ROLLBACK")


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


class KeepAlive:
    """While armed, tells JetStream every ``every_s`` that the messages ``held()`` returns are
    still being worked on (Postgres down, a rebuild holding the stream), so they are not
    redelivered meanwhile, nor dead-lettered once redelivered ``max_deliver`` times. A timer,
    not a task: arming and disarming it per batch costs next to nothing."""

    def __init__(self, every_s: float, held: Callable[[], Sequence[Delivery]]) -> None:
        self._every_s = every_s
        self._held = held
        self._timer: asyncio.TimerHandle | None = None
        self._pings: set[asyncio.Task[None]] = set()

    def arm(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._every_s, self._fire)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        task = asyncio.create_task(self._ping(list(self._held())))
        self._pings.add(task)
        task.add_done_callback(self._pings.discard)
        self.arm()

    @staticmethod
    async def _ping(deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            with contextlib.suppress(Exception):
                await delivery.in_progress()


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
        linger_s: float = 0.0,
    ) -> None:
        self.projection = projection
        self._pool = pool
        self._hot = hot
        self._ack_wait_s = ack_wait_s
        self._queue: list[_Queued] = []
        self._drainer: asyncio.Task[None] | None = None
        self._begin = begin_locked(projection.stream)
        self._linger_s = linger_s
        self._writing: list[_Queued] = []
        self._keepalive = KeepAlive(ack_wait_s / 3, self._held)

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
        self._keepalive.disarm()
        for queued in self._queue:
            if not queued.done.done():
                queued.done.set_exception(RuntimeError("projector stopping"))
        self._queue.clear()

    async def _drain(self) -> None:
        self._keepalive.arm()
        try:
            if self._linger_s > 0:
                # Let the batch gather: the consume loop keeps fetching meanwhile (handlers.py).
                await asyncio.sleep(self._linger_s)
            while self._queue:
                batch, self._queue = self._queue, []
                self._writing = batch
                try:
                    await self._write(batch)
                except asyncio.CancelledError:
                    self._queue = batch + self._queue
                    raise
                except Exception as exc:  # a bug outside any one message: let them be retried
                    log.exception("writing %s failed", self.projection.stream)
                    for queued in batch:
                        if not queued.done.done():
                            queued.done.set_exception(exc)
                finally:
                    self._writing = []
        finally:
            # Nothing awaits after the queue was found empty: a message queued from now on
            # finds this task done and starts the next one.
            self._keepalive.disarm()

    async def _write(self, batch: list[_Queued]) -> None:
        stream = self.projection.stream
        planned = [q.planned for q in batch]

        last = max(item.seq for item in planned)

        async def transaction() -> BatchResult:
            for item in planned:
                item.error = None
            async with connection(self._pool) as conn:
                try:
                    return await self._commit(conn, planned, last)
                except BaseException:
                    await _abandon(conn)
                    raise

        result = await retrying(f"write {stream}", transaction)
        metrics.record_applied(stream, last, result.applied.rows)
        if result.applied.statuses and self._hot is not None:
            await self._refresh_hot(result.applied)
        for queued in batch:
            error = queued.planned.error
            if error is None:
                queued.done.set_result(None)
            else:
                queued.done.set_exception(PermanentError(f"cannot be projected: {error!r}"))

    async def _commit(
        self, conn: asyncpg.Connection, planned: list[Planned], last: int
    ) -> BatchResult:
        """The batch in one transaction of three round trips: ``BEGIN`` with the lock, the
        changes, the offset with ``COMMIT``. A batch PostgreSQL refuses is rolled back and
        redone with a savepoint per message, so only the bad message fails."""
        await conn.execute(self._begin)
        try:
            result = BatchResult(await apply_whole(conn, self.projection, planned))
        except Exception as exc:
            if transient(exc):
                raise
            _split(self.projection, exc)
            await conn.execute("ROLLBACK")
            async with conn.transaction():
                await conn.execute(LOCK_SHARED, self.projection.stream)
                result = await apply_each(conn, self.projection, planned)
                await advance(conn, self.projection.stream, last)
            return result
        await conn.execute(advance_and_commit(self.projection.stream, last))
        return result

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

    def _held(self) -> list[Delivery]:
        return [q.delivery for q in (*self._writing, *self._queue)]
