"""Restore: republish archived messages, in their original order, with their original headers
and ``Nats-Msg-Id``, so replaying a month twice stores it once (within the target stream's
duplicate window; beyond it, readers are idempotent by envelope id).

Two kinds of target:

- ``into(SUBJECT)``: every message to SUBJECT, which a stream must store; ``into("x.>")``
  keeps the original subject under the prefix (``x.chat.inbound.feishu.acme``).
- ``projections(NAME)``: a replay stream NAME (created when missing) that stores each message
  under its *original* subject, so a read model rebuilt from NAME sees the subjects it knows.
  Live consumers (router, agent, notifier) never see a replay: the stream listens on
  ``replay.<name>.>`` and a subject transform strips that prefix on the way in, so no subject
  overlaps a live stream."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from nats.aio.client import Client as NatsClient
from nats.js.api import RetentionPolicy, StorageType, StreamConfig, SubjectTransform
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from zhongshu.archiver import catalog
from zhongshu.archiver.adapters.objectstore import ObjectStore
from zhongshu.archiver.adapters.publisher import PipelinedPublisher
from zhongshu.archiver.layout import Month
from zhongshu.archiver.lines import ArchivedMessage
from zhongshu.archiver.manifest import ObjectEntry
from zhongshu.archiver.reader import in_sequence
from zhongshu.contracts import headers as H
from zhongshu.contracts.subjects import sanitize_token

WINDOW = 5_000  # publishes waiting for their PubAck at most
PROGRESS_EVERY = 1_000
REPLAY_MAX_AGE_S = 7 * 24 * 3600.0  # a replay stream is scratch space: it cleans itself up


class RestoreError(Exception):
    """Bad input or a target that cannot take the messages; the text says which."""


class NoTargetStream(RestoreError):
    """No stream stores the target subject (the operator must create one)."""


@dataclass(frozen=True)
class Target:
    description: str
    prefix: str | None
    """Prepended to the original subject (with a dot); None: every message to ``subject``."""
    subject: str = ""

    def subject_for(self, original: str) -> str:
        return f"{self.prefix}.{original}" if self.prefix is not None else self.subject

    @property
    def probe_subject(self) -> str:
        return self.subject_for("probe") if self.prefix is not None else self.subject


def into(subject: str) -> Target:
    text = subject.strip()
    tokens = text.split(".")
    bad = (
        not text
        or any(not t or " " in t or "*" in t for t in tokens)
        or any(">" in t for t in tokens[:-1])
        or (">" in tokens[-1] and tokens[-1] != ">")
    )
    if bad or tokens == [">"]:
        raise RestoreError(
            f"bad --into subject {subject!r}: give a subject (every message goes there) or a "
            "prefix ending in '.>' (each message keeps its subject under it)"
        )
    if tokens[-1] == ">":
        prefix = ".".join(tokens[:-1])
        return Target(f"{prefix}.<original subject>", prefix)
    return Target(text, None, text)


def replay_prefix(stream_name: str) -> str:
    return f"replay.{sanitize_token(stream_name)}"


def projections(stream_name: str) -> Target:
    return Target(f"stream {stream_name} under the original subjects", replay_prefix(stream_name))


async def ensure_replay_stream(js: JetStreamContext, name: str) -> None:
    """Create the replay stream ``name`` unless it exists with the expected subjects."""
    listen = f"{replay_prefix(name)}.>"
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        await js.add_stream(
            StreamConfig(
                name=name,
                description="zhongshu archive restore (--projections): original subjects",
                subjects=[listen],
                subject_transform=SubjectTransform(src=listen, dest=">"),
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                max_age=REPLAY_MAX_AGE_S,
            )
        )
        return
    if list(info.config.subjects or []) != [listen]:
        raise RestoreError(
            f"stream {name} exists but does not listen on {listen}: it is not a replay "
            "stream; choose another --replay-stream"
        )


@dataclass(frozen=True)
class Plan:
    stream: str
    months: tuple[Month, ...]
    objects: tuple[ObjectEntry, ...]

    @property
    def events(self) -> int:
        return sum(o.count for o in self.objects)


async def plan(store: ObjectStore, stream: str, first: Month, last: Month) -> Plan:
    """The objects holding ``stream``'s events of months ``first`` .. ``last``."""
    if last < first:
        raise RestoreError(f"--to {last} is before --from {first}")
    await catalog.require_stream(store, stream)
    found = await catalog.months(store, stream, first, last)
    return Plan(
        stream,
        tuple(s.month for s in found),
        tuple(o for s in found for o in s.manifest.objects),
    )


@dataclass
class RestoreReport:
    target_stream: str = ""
    read: int = 0
    published: int = 0
    duplicates: int = 0
    failed: int = 0
    first_error: str | None = None
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.read / self.seconds if self.seconds > 0 else 0.0


def republish_headers(stream: str, line: ArchivedMessage) -> dict[str, str]:
    """The original headers, minus those the server set or would act on again (expectations,
    schedules, TTLs), keeping ``Nats-Msg-Id`` (or giving one, so a replay dedupes)."""
    headers = line.headers
    if any(k[:5].lower() == "nats-" and k != H.MSG_ID for k in headers):
        headers = {k: v for k, v in headers.items() if k == H.MSG_ID or k[:5].lower() != "nats-"}
    if H.MSG_ID not in headers:
        headers = {**headers, H.MSG_ID: f"archive:{stream}:{line.seq}"}
    return headers


async def restore(
    nc: NatsClient,
    js: JetStreamContext,
    store: ObjectStore,
    the_plan: Plan,
    target: Target,
    *,
    progress: Callable[[int], None] | None = None,
) -> RestoreReport:
    """Publish every message of ``the_plan`` to ``target`` in stream order; every PubAck is
    awaited before this returns. ``progress(n)`` is told every few thousand messages sent."""
    report = RestoreReport()
    try:
        report.target_stream = await js.find_stream_name_by_subject(target.probe_subject)
    except NotFoundError:
        raise NoTargetStream(
            f"no stream stores {target.probe_subject}: create one for the target first"
        ) from None
    started = time.perf_counter()
    told = 0
    async with PipelinedPublisher(nc, window=WINDOW) as publisher:
        async for line in in_sequence(store, the_plan.objects):
            await publisher.publish(
                target.subject_for(line.subject),
                line.payload(),
                republish_headers(the_plan.stream, line),
            )
            report.read += 1
            if progress is not None and report.read - told >= PROGRESS_EVERY:
                progress(report.read - told)
                told = report.read
    if progress is not None and report.read > told:
        progress(report.read - told)
    tally = publisher.tally
    report.published, report.duplicates = tally.stored, tally.duplicates
    report.failed, report.first_error = tally.failed, tally.first_error
    report.seconds = time.perf_counter() - started
    return report
