"""Draining one stream into the archive, chunk after chunk, resumable after any crash.

A chunk is a contiguous range of stream sequences. Committing one, in this order:

1. record the range as ``pending`` in the KV state (so a restart rewrites exactly it);
2. write one compressed object per month the chunk's events fall in, each whole;
3. record the objects in the months' manifests (replacing an earlier attempt's entries);
4. record ``archived = last`` in the KV state (the resume point);
5. ack the chunk's last message (the consumer acks all before it).

A crash before 4 leaves the range pending: the restart re-reads it from the stream and writes
the same bytes under the same names, so the archive has neither a gap nor a duplicate line. The
next chunk is collected while the previous one is being written, one commit at a time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import tzinfo
from functools import partial
from typing import TypeVar

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from zhongshu.archiver import lines, metrics
from zhongshu.archiver.adapters.objectstore import ObjectStore, StoreError
from zhongshu.archiver.adapters.puller import BatchPuller
from zhongshu.archiver.adapters.statekv import ArchiveState, StateStore
from zhongshu.archiver.alerts import Alerts
from zhongshu.archiver.layout import MonthOf
from zhongshu.archiver.manifest import ManifestBook
from zhongshu.archiver.manifest import save as save_manifest
from zhongshu.archiver.writer import Chunk, prepare

log = logging.getLogger("zhongshu.archiver.drain")

T = TypeVar("T")

ACK_WAIT_S = 300.0  # redeliveries are skipped by sequence anyway; this only limits their number
CRASH_STEPS = ("after-intent", "after-objects", "after-manifests")


class Resync(Exception):
    """The consumer delivered out of order: start again from the resume point."""


class SequenceReset(Exception):
    """The stream's sequences restarted below the resume point (it was recreated)."""


@dataclass(frozen=True)
class DrainOptions:
    stream: str
    zone: tzinfo
    time_zone: str
    batch: int = 5_000
    poll_s: float = 1.0
    """While caught up, how long the drain waits before it asks for new messages."""
    max_events: int = 20_000
    max_bytes: int = 16 * 1024**2
    max_age_s: float = 600.0
    zstd_level: int = 3
    crash_at: tuple[str, int] | None = None
    """Testing only: SIGKILL this process at that step of the Nth commit."""


def parse_crash_at(text: str | None) -> tuple[str, int] | None:
    if not text:
        return None
    step, _, nth = text.partition(":")
    if step not in CRASH_STEPS:
        raise ValueError(f"crash step must be one of {', '.join(CRASH_STEPS)}, not {step!r}")
    return step, int(nth or "1")


def ack_position(reply: str) -> tuple[int, int]:
    """(stream sequence, publish time in ns) from a JetStream ack subject, without parsing the
    rest of the metadata: ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>``
    or the longer form with a domain and an account hash before the stream."""
    tokens = reply.split(".")
    base = 2 if len(tokens) == 9 else 4
    return int(tokens[base + 3]), int(tokens[base + 5])


class StreamDrain:
    """Archives one stream; ``run`` until ``stop``."""

    def __init__(
        self,
        options: DrainOptions,
        *,
        nc: NatsClient,
        js: JetStreamContext,
        store: ObjectStore,
        states: StateStore,
        alerts: Alerts | None = None,
    ) -> None:
        self.o = options
        self.nc, self.js, self.store, self.states, self.alerts = nc, js, store, states, alerts
        self.state = ArchiveState(options.stream, 0, None, 0)
        self.commits = 0
        self._stopping = asyncio.Event()
        self._commit: asyncio.Task[None] | None = None
        self._month_of = MonthOf(options.zone)
        self._times = lines.PublishTimes()
        labels = (options.stream,)
        self._m_events = metrics.ARCHIVED_EVENTS.labels(*labels)
        self._m_objects = metrics.ARCHIVED_OBJECTS.labels(*labels)
        self._m_stored = metrics.STORED_BYTES.labels(*labels)
        self._m_raw = metrics.RAW_BYTES.labels(*labels)
        self._m_seq = metrics.ARCHIVED_SEQ.labels(*labels)
        self._m_commit = metrics.COMMIT_SECONDS.labels(*labels)

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Drain until stopped; after an error, start again from the resume point."""
        delay = 0.5
        while not self._stopping.is_set():
            try:
                await self._drain()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error(
                    "archiving %s failed; resuming from the last archived sequence in %.1fs: %s",
                    self.o.stream,
                    delay,
                    exc,
                    exc_info=not isinstance(exc, StoreError | Resync | SequenceReset),
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(delay * 2, 30.0)

    # ---------------------------------------------------------------- the loop

    async def _drain(self) -> None:
        o = self.o
        self.state = await self._resume_point()
        self._m_seq.set(self.state.archived)
        book = ManifestBook(self.store, o.stream, o.time_zone)
        puller = BatchPuller(
            self.nc,
            self.js,
            o.stream,
            ack_wait_s=ACK_WAIT_S,
            max_ack_pending=2 * (o.max_events + o.batch),
        )
        await puller.bind(self.state.archived + 1)
        next_seq = self.state.archived + 1
        until = self.state.pending[1] if self.state.pending else None
        if until is not None:
            log.info("%s: rewriting chunk %d-%d left pending by a crash", o.stream, next_seq, until)
        chunk = Chunk(o.stream, next_seq)
        last_msg: Msg | None = None  # acking it acks the whole chunk (AckPolicy.ALL)
        try:
            while not self._stopping.is_set():
                msgs = await puller.pull(o.batch)
                if self._stopping.is_set():
                    break  # unprocessed: a fresh consumer delivers them again after a restart
                for msg in msgs:
                    seq, published_ns = ack_position(msg.reply)
                    if seq < next_seq:
                        continue  # redelivered, already collected
                    if seq > next_seq:
                        await self._check_hole(next_seq, seq)
                    if until is not None and seq > until:
                        chunk.cover(until)
                        await self._hand_over(chunk, book, last_msg)
                        chunk, until, last_msg = Chunk(o.stream, until + 1), None, None
                    self._collect(chunk, msg, seq, published_ns)
                    last_msg, next_seq = msg, seq + 1
                if until is not None:
                    if next_seq > until or (not msgs and await self._read_all(next_seq, until)):
                        # All of the pending range that still exists has been read.
                        chunk.cover(until)
                        await self._hand_over(chunk, book, last_msg)
                        chunk, until, last_msg = Chunk(o.stream, until + 1), None, None
                elif self._full(chunk) or (chunk.count and chunk.age_s >= o.max_age_s):
                    await self._hand_over(chunk, book, last_msg)
                    chunk, last_msg = Chunk(o.stream, next_seq), None
                if len(msgs) < o.batch:
                    await self._caught_up()
            if chunk.count and until is None:
                await self._hand_over(chunk, book, last_msg)  # a clean stop writes what it holds
            await self._wait_commit()
        finally:
            # Leaving on an error: a chunk being written is still valid work, let it finish
            # (a cancellation of this task cancels it too, which a restart repairs).
            if self._commit is not None:
                task, self._commit = self._commit, None
                try:
                    await task
                except Exception as exc:
                    log.warning("%s: the last commit failed too: %s", o.stream, exc)
            await puller.close()

    async def _caught_up(self) -> None:
        """The stream had no more for now: ask again in ``poll_s`` (or at a stop)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), self.o.poll_s)

    def _collect(self, chunk: Chunk, msg: Msg, seq: int, published_ns: int) -> None:
        payload = msg.data
        moment, is_json = lines.event_time(payload)
        ts = moment.timestamp() if moment is not None else published_ns / lines.NS
        line = lines.encode_line(
            seq,
            msg.subject,
            self._times.format(published_ns),
            msg.headers,
            payload,
            is_json,
        )
        chunk.add(seq, self._month_of(ts), ts, line)

    def _full(self, chunk: Chunk) -> bool:
        return chunk.count >= self.o.max_events or chunk.raw_bytes >= self.o.max_bytes

    async def _resume_point(self) -> ArchiveState:
        state = await self.states.load(self.o.stream)
        if state.revision == 0:
            # First run on this stream: start at the oldest message still on the bus.
            info = await self.js.stream_info(self.o.stream)
            state = await self.states.start_at(state, max(0, int(info.state.first_seq) - 1))
            log.info("%s: first run, archiving from sequence %d", self.o.stream, state.archived + 1)
            return state
        last = int((await self.js.stream_info(self.o.stream)).state.last_seq)
        if last < state.archived:
            # The stream was deleted and created again: its new sequences would collide with
            # archived ones. An operator decides (archive elsewhere, or start over).
            detail = (
                f"{self.o.stream} ends at sequence {last} but the archive already holds up to "
                f"{state.archived}: the stream was recreated. Point ZHONGSHU_OBJECT_STORE_URL at "
                f"a new location and delete key {self.o.stream} of KV bucket `archive` to start "
                "over"
            )
            if self.alerts is not None:
                with contextlib.suppress(Exception):
                    await self.alerts.raise_once(
                        f"reset:{self.o.stream}",
                        "error",
                        f"archiving {self.o.stream} stopped: its sequences restarted",
                        detail,
                        {"stream": self.o.stream},
                        time.time(),
                    )
            raise SequenceReset(detail)
        return state

    async def _check_hole(self, expected: int, seq: int) -> None:
        """Sequences ``expected`` .. ``seq - 1`` were not delivered. Before the stream's first
        sequence they aged out unarchived (reported); after it they were deleted (fine), unless
        one is still there, which would be an out-of-order delivery (start again)."""
        info = await self.js.stream_info(self.o.stream)
        first = int(info.state.first_seq)
        if expected < first:
            lost_last = min(seq, first) - 1
            await self._report_lost(expected, lost_last)
        probe = max(expected, first)
        if probe < seq:
            with contextlib.suppress(NotFoundError):
                found = await self.js.get_msg(self.o.stream, probe, subject=">", next=True)
                if found.seq is not None and found.seq < seq:
                    raise Resync(
                        f"{self.o.stream}: got sequence {seq} while {found.seq} is still in the "
                        "stream"
                    )

    async def _read_all(self, next_seq: int, until: int) -> bool:
        """True when no message from ``next_seq`` to ``until`` is left in the stream (an empty
        pull alone could also be a connection that dropped the answer)."""
        try:
            found = await self.js.get_msg(self.o.stream, next_seq, subject=">", next=True)
        except NotFoundError:
            return True
        return found.seq is None or found.seq > until

    async def _report_lost(self, first: int, last: int) -> None:
        count = last - first + 1
        metrics.LOST_EVENTS.labels(self.o.stream).inc(count)
        log.error(
            "%s: sequences %d-%d (%d messages) left the stream before they were archived",
            self.o.stream,
            first,
            last,
            count,
        )
        if self.alerts is not None:
            with contextlib.suppress(Exception):
                await self.alerts.raise_once(
                    f"lost:{self.o.stream}:{first}-{last}",
                    "error",
                    f"{count} event(s) of {self.o.stream} were never archived",
                    f"sequences {first}-{last} left the stream (max_age or max_bytes) before "
                    "the archiver copied them; raise the stream's limits or fix the archiver",
                    {"stream": self.o.stream},
                    time.time(),
                )

    # ---------------------------------------------------------------- commits

    async def _hand_over(self, chunk: Chunk, book: ManifestBook, ack: Msg | None) -> None:
        """Start writing ``chunk`` once the previous commit is done (one at a time, in order)."""
        await self._wait_commit()
        self._commit = asyncio.create_task(self._write(chunk, book, ack))

    async def _wait_commit(self) -> None:
        if self._commit is not None:
            task, self._commit = self._commit, None
            await task

    async def _write(self, chunk: Chunk, book: ManifestBook, ack: Msg | None) -> None:
        started = time.perf_counter()
        first, last = chunk.first_seq, chunk.last_seq
        self.commits += 1
        if self.state.pending != (first, last):
            self.state = await self.states.begin(self.state, first, last)
        self._crash_point("after-intent")
        prepared = await asyncio.to_thread(prepare, chunk, self.o.zone, self.o.zstd_level)
        for obj in prepared:
            await self._retrying(partial(self.store.put, obj.entry.key, obj.data))
        self._crash_point("after-objects")
        for obj in prepared:  # one object per month, so one manifest each
            manifest = await self._retrying(partial(book.get, obj.month))
            manifest.with_chunk(first, last, [obj.entry])
            await self._retrying(partial(save_manifest, self.store, manifest))
        self._crash_point("after-manifests")
        self.state = await self.states.commit(self.state, last)
        if ack is not None:
            await ack.ack()
        self._m_seq.set(last)
        self._m_events.inc(chunk.count)
        self._m_objects.inc(len(prepared))
        self._m_stored.inc(sum(p.entry.bytes for p in prepared))
        self._m_raw.inc(chunk.raw_bytes)
        self._m_commit.observe(time.perf_counter() - started)
        log.debug("%s: archived %d-%d (%d events)", self.o.stream, first, last, chunk.count)

    async def _retrying(self, action: Callable[[], Awaitable[T]]) -> T:
        """Store trouble is waited out (the chunk stays unacked on the bus meanwhile, and the
        lag alert tells the operator); a stop ends the wait."""
        delay = 0.5
        while True:
            try:
                return await action()
            except StoreError as exc:
                if self._stopping.is_set():
                    raise
                log.warning("%s: %s; retrying in %.1fs", self.o.stream, exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(delay * 2, 30.0)

    def _crash_point(self, step: str) -> None:
        if self.o.crash_at == (step, self.commits):
            log.warning("crash point %s of commit %d reached: SIGKILL", step, self.commits)
            os.kill(os.getpid(), signal.SIGKILL)
