"""``zhongshu dlq``: read the dead-letter stream and replay its messages to where they came from.

Messages are read with direct stream gets (``STREAM.MSG.GET`` by sequence, or "next from this
sequence on this subject filter"): no consumer is created, so inspecting the DLQ changes nothing."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import typer
from nats.js.api import RawStreamMsg
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from rich.markup import escape
from rich.table import Table

from zhongshu.cli.console import CliError, console, warn
from zhongshu.cli.provision_cmd import CLIENT_NAME
from zhongshu.contracts import headers as H
from zhongshu.contracts import subjects
from zhongshu.contracts.streams import DLQ
from zhongshu.runtime import bus

DLQ_HEADERS = frozenset(
    h.lower()
    for h in (
        H.DLQ_ERROR,
        H.DLQ_STREAM,
        H.DLQ_CONSUMER,
        H.DLQ_SUBJECT,
        H.DLQ_SEQUENCE,
        H.DLQ_DELIVERIES,
        H.DLQ_FAILED_AT,
    )
)
ERROR_COLUMN_WIDTH = 60


def replay_msg_id(dlq_seq: int) -> str:
    """Deterministic, so replaying the same dead letter twice within the target stream's
    duplicate window stores it once."""
    return f"replay:{dlq_seq}"


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


@dataclass(frozen=True)
class DeadLetter:
    dlq_seq: int
    dlq_subject: str
    headers: Mapping[str, str]
    data: bytes

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)

    @property
    def stream(self) -> str | None:
        return self.header(H.DLQ_STREAM)

    @property
    def consumer(self) -> str | None:
        return self.header(H.DLQ_CONSUMER)

    @property
    def subject(self) -> str | None:
        return self.header(H.DLQ_SUBJECT)

    @property
    def sequence(self) -> int | None:
        return _int(self.header(H.DLQ_SEQUENCE))

    @property
    def deliveries(self) -> int | None:
        return _int(self.header(H.DLQ_DELIVERIES))

    @property
    def failed_at(self) -> str | None:
        return self.header(H.DLQ_FAILED_AT)

    @property
    def error(self) -> str | None:
        return self.header(H.DLQ_ERROR)

    def original_headers(self) -> dict[str, str]:
        """The message's own headers: without ours (``Zhongshu-Dlq-*``) and without the
        server's (``Nats-*``), which belong to the dead letter, not to the original."""
        return {
            k: v
            for k, v in self.headers.items()
            if k.lower() not in DLQ_HEADERS and not k.lower().startswith("nats-")
        }

    def matches(self, stream: str | None, consumer: str | None) -> bool:
        return (stream is None or (self.stream or "").lower() == stream.lower()) and (
            consumer is None or self.consumer == consumer
        )

    def to_json(self) -> dict[str, Any]:
        try:
            payload: str = self.data.decode("utf-8")
            encoding = "utf-8"
        except UnicodeDecodeError:
            payload, encoding = base64.b64encode(self.data).decode(), "base64"
        return {
            "dlq_seq": self.dlq_seq,
            "dlq_subject": self.dlq_subject,
            "stream": self.stream,
            "consumer": self.consumer,
            "subject": self.subject,
            "seq": self.sequence,
            "deliveries": self.deliveries,
            "failed_at": self.failed_at,
            "error": self.error,
            "headers": self.original_headers(),
            "payload": payload,
            "payload_encoding": encoding,
        }

    @classmethod
    def from_raw(cls, raw: RawStreamMsg) -> DeadLetter:
        return cls(
            dlq_seq=int(raw.seq or 0),
            dlq_subject=raw.subject or "",
            headers=dict(raw.headers or {}),
            data=raw.data or b"",
        )


def subject_filter(stream: str | None, consumer: str | None) -> str:
    """The narrowest DLQ subject filter for the options (headers are checked as well: tokens are
    sanitized, so two names can share one)."""
    if stream and consumer:
        return subjects.dlq(stream, consumer)
    if stream:
        return subjects.dlq_for(stream)
    if consumer:
        return f"dlq.*.{subjects.sanitize_token(consumer)}"
    return subjects.ALL_DLQ


async def iter_dead_letters(
    js: JetStreamContext, *, stream: str | None = None, consumer: str | None = None
) -> AsyncIterator[DeadLetter]:
    """Every dead letter, oldest first, skipping deleted sequences on the server."""
    info = await js.stream_info(DLQ.name)
    if not info.state.messages:
        return
    filter_subject = subject_filter(stream, consumer)
    seq = info.state.first_seq
    while seq <= info.state.last_seq:
        try:
            raw = await js.get_msg(DLQ.name, seq, subject=filter_subject, next=True)
        except NotFoundError:
            return
        letter = DeadLetter.from_raw(raw)
        if letter.matches(stream, consumer):
            yield letter
        seq = letter.dlq_seq + 1


async def get_dead_letter(js: JetStreamContext, seq: int) -> DeadLetter | None:
    try:
        return DeadLetter.from_raw(await js.get_msg(DLQ.name, seq))
    except NotFoundError:
        return None


# --- list -------------------------------------------------------------------------------------


@dataclass
class Listing:
    letters: list[DeadLetter]
    total_in_dlq: int
    truncated: bool


async def list_letters(
    url: str, *, stream: str | None, consumer: str | None, limit: int
) -> Listing:
    nc = await bus.connect(url, name=CLIENT_NAME)
    try:
        js = bus.jetstream(nc)
        total = (await _dlq_info(js)).state.messages
        letters: list[DeadLetter] = []
        truncated = False
        async for letter in iter_dead_letters(js, stream=stream, consumer=consumer):
            if len(letters) >= limit:
                truncated = True
                break
            letters.append(letter)
        return Listing(letters, total, truncated)
    finally:
        await nc.close()


async def _dlq_info(js: JetStreamContext) -> Any:
    try:
        return await js.stream_info(DLQ.name)
    except NotFoundError:
        raise CliError(f"stream {DLQ.name} does not exist: run `zhongshu provision`") from None


def letters_table(letters: Sequence[DeadLetter]) -> Table:
    table = Table(box=None, header_style="bold")
    for col in ("dlq seq", "stream", "consumer", "subject", "seq", "deliveries", "failed at"):
        table.add_column(
            col, justify="right" if col in ("dlq seq", "seq", "deliveries") else "left"
        )
    table.add_column("error", max_width=ERROR_COLUMN_WIDTH, overflow="fold")
    for d in letters:
        table.add_row(
            str(d.dlq_seq),
            escape(d.stream or "?"),
            escape(d.consumer or "?"),
            escape(d.subject or "?"),
            str(d.sequence or "?"),
            str(d.deliveries or "?"),
            escape(d.failed_at or "?"),
            f"[red]{escape(d.error or '')}[/]",
        )
    return table


def run_list(
    url: str, *, stream: str | None, consumer: str | None, limit: int, as_json: bool
) -> None:
    listing = asyncio.run(list_letters(url, stream=stream, consumer=consumer, limit=limit))
    if as_json:
        typer.echo(json.dumps([d.to_json() for d in listing.letters], indent=2))
        return
    if not listing.letters:
        console.print("[green]the DLQ is empty[/]" if not listing.total_in_dlq else "no match")
        return
    console.print(letters_table(listing.letters))
    more = " (more match: raise --limit)" if listing.truncated else ""
    console.print(
        f"[dim]{len(listing.letters)} shown, {listing.total_in_dlq} in {DLQ.name}{more}[/]"
    )


# --- replay -----------------------------------------------------------------------------------


@dataclass
class Replayed:
    dlq_seq: int
    subject: str | None = None
    stored_in: str | None = None
    stored_seq: int | None = None
    duplicate: bool = False
    deleted: bool = False
    error: str | None = None


@dataclass
class ReplayReport:
    results: list[Replayed] = field(default_factory=list)

    @property
    def failed(self) -> list[Replayed]:
        return [r for r in self.results if r.error is not None]


async def replay_letter(
    js: JetStreamContext, letter: DeadLetter, *, to: str | None, keep: bool
) -> Replayed:
    """Publish one dead letter's body with its original headers, await the PubAck, then delete
    it from the DLQ (unless `keep`)."""
    result = Replayed(letter.dlq_seq)
    subject = to or letter.subject
    if not subject:
        result.error = f"no {H.DLQ_SUBJECT} header: give --to SUBJECT"
        return result
    result.subject = subject
    try:
        ack = await bus.Publisher(js).publish(
            subject,
            letter.data,
            msg_id=replay_msg_id(letter.dlq_seq),
            headers=letter.original_headers(),
        )
    except nats.js.errors.NoStreamResponseError:
        result.error = f"no stream stores {subject}"
        return result
    except (nats.errors.Error, TimeoutError) as exc:
        result.error = f"publish failed: {type(exc).__name__}: {exc}"
        return result
    result.stored_in, result.stored_seq, result.duplicate = ack.stream, ack.seq, bool(ack.duplicate)
    if not keep:
        try:
            result.deleted = bool(await js.delete_msg(DLQ.name, letter.dlq_seq))
        except nats.errors.Error as exc:
            result.error = f"replayed, but not deleted from {DLQ.name}: {exc}"
    return result


async def _audit(js: JetStreamContext, letter: DeadLetter, result: Replayed) -> None:
    """`dlq.replayed` in the hub's audit trail, for each dead letter sent back (or tried)."""
    from zhongshu.runtime import auditing

    not_audited = await auditing.record(
        js,
        source="zhongshu/cli",
        actor=auditing.operator(),
        action="dlq.replayed",
        target=f"{DLQ.name}:{letter.dlq_seq}",
        kind="dlq",
        outcome="succeeded" if result.error is None else "failed",
        detail=result.error or f"to {result.subject} (seq {result.stored_seq})",
        labels={
            "stream": letter.stream or "",
            "consumer": letter.consumer or "",
            "subject": result.subject or "",
            "kept": str(not result.deleted).lower(),
        },
    )
    if not_audited:
        warn(f"dead letter {letter.dlq_seq}: the replay is not in the audit trail ({not_audited})")


async def replay(
    url: str,
    *,
    seqs: Sequence[int],
    replay_all: bool,
    stream: str | None,
    consumer: str | None,
    to: str | None,
    keep: bool,
) -> ReplayReport:
    nc = await bus.connect(url, name=CLIENT_NAME)
    report = ReplayReport()
    try:
        js = bus.jetstream(nc)
        await _dlq_info(js)
        if replay_all:
            letters = [d async for d in iter_dead_letters(js, stream=stream, consumer=consumer)]
        else:
            letters = []
            for seq in dict.fromkeys(seqs):
                letter = await get_dead_letter(js, seq)
                if letter is None:
                    report.results.append(Replayed(seq, error=f"no message {seq} in {DLQ.name}"))
                elif not letter.matches(stream, consumer):
                    report.results.append(
                        Replayed(
                            seq,
                            error=f"belongs to {letter.stream}/{letter.consumer}, "
                            "not the --stream/--consumer given",
                        )
                    )
                else:
                    letters.append(letter)
        for letter in letters:
            result = await replay_letter(js, letter, to=to, keep=keep)
            report.results.append(result)
            await _audit(js, letter, result)
    finally:
        await nc.close()
    report.results.sort(key=lambda r: r.dlq_seq)
    return report


def report_table(report: ReplayReport) -> Table:
    table = Table(box=None, header_style="bold")
    for col in ("dlq seq", "to subject", "stored", "dlq"):
        table.add_column(col)
    table.add_column("error", overflow="fold")
    for r in report.results:
        if r.stored_in is not None:
            stored = f"{r.stored_in} #{r.stored_seq}" + (
                " [dim](duplicate)[/]" if r.duplicate else ""
            )
        else:
            stored = "-"
        table.add_row(
            str(r.dlq_seq),
            escape(r.subject or "-"),
            stored,
            "deleted" if r.deleted else "kept",
            f"[red]{escape(r.error)}[/]" if r.error else "",
        )
    return table


def run_replay(
    url: str,
    *,
    seqs: Sequence[int],
    replay_all: bool,
    stream: str | None,
    consumer: str | None,
    to: str | None,
    keep: bool,
) -> None:
    report = asyncio.run(
        replay(
            url,
            seqs=seqs,
            replay_all=replay_all,
            stream=stream,
            consumer=consumer,
            to=to,
            keep=keep,
        )
    )
    if not report.results:
        console.print("nothing to replay")
        return
    console.print(report_table(report))
    stored = [r for r in report.results if r.stored_in is not None]
    duplicates = sum(r.duplicate for r in stored)
    deleted = sum(r.deleted for r in report.results)
    console.print(
        f"replayed {len(stored)} ({duplicates} already stored, dropped as duplicates), "
        f"deleted {deleted} from {DLQ.name}, failed {len(report.failed)}"
    )
    if report.failed:
        raise CliError(f"{len(report.failed)} message(s) could not be replayed (see the table)")
