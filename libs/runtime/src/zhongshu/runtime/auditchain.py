"""The audit trail's hash chain: each record of a tenant carries the hash of the one before it, so
a record changed, removed or moved in the warm tier (or in an export) shows where it was.

One definition for the projector that writes the chain, and for `zhongshu audit verify`, the
gateway and the watchdog that read it. A record's hash is SHA-256 over a canonical encoding (JSON,
keys sorted, no spaces, the time in UTC with microseconds) of its fields and the previous hash;
the first record of a tenant follows ``GENESIS``.

Retention may delete a tenant's oldest records; it then keeps the last deleted position and hash
as the chain's anchor, so the first remaining record is still checked against something."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import msgspec

GENESIS = "0" * 64
"""The previous hash of a tenant's first record."""

_canonical = msgspec.json.Encoder(order="sorted")


@dataclass(frozen=True, slots=True)
class ChainRecord:
    """One audit record as the chain covers it."""

    tenant: str
    pos: int
    """Its place in the tenant's chain, from 1."""
    seq: int
    """The AUDIT stream sequence it was projected from."""
    event_id: str
    kind: str
    actor: str
    action: str
    outcome: str
    at: datetime
    data: Mapping[str, Any]
    """The `AuditRecorded` event's fields."""
    prev_hash: str = GENESIS
    hash: str = ""


def timestamp(at: datetime) -> str:
    """The time as the chain encodes it (UTC, always with microseconds)."""
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def canonical(record: ChainRecord, prev_hash: str) -> bytes:
    return _canonical.encode(
        {
            "action": record.action,
            "actor": record.actor,
            "at": timestamp(record.at),
            "data": record.data,
            "event_id": record.event_id,
            "kind": record.kind,
            "outcome": record.outcome,
            "pos": record.pos,
            "prev_hash": prev_hash,
            "seq": record.seq,
            "tenant": record.tenant,
        }
    )


def digest(record: ChainRecord, prev_hash: str) -> str:
    """The hash ``record`` must carry when it follows ``prev_hash``."""
    return hashlib.sha256(canonical(record, prev_hash)).hexdigest()


@dataclass(frozen=True, slots=True)
class Anchor:
    """Where a tenant's stored chain starts: after position ``pos`` whose hash was ``hash``
    (0 and ``GENESIS`` when nothing was pruned)."""

    pos: int = 0
    hash: str = GENESIS


@dataclass(frozen=True, slots=True)
class Head:
    """The last position and hash the writer recorded for a tenant (a truncated tail shows)."""

    pos: int
    hash: str


@dataclass(frozen=True, slots=True)
class Break:
    """The first place a tenant's chain does not hold."""

    tenant: str
    pos: int
    seq: int | None
    event_id: str
    problem: str

    def describe(self) -> str:
        where = f"record {self.pos}"
        if self.seq is not None:
            where += f" (stream seq {self.seq}"
            where += f", event {self.event_id})" if self.event_id else ")"
        return f"tenant {self.tenant or '(none)'}: {where}: {self.problem}"


@dataclass
class Verified:
    """What a verification saw: records checked per tenant, and the first break of each."""

    records: dict[str, int] = field(default_factory=dict)
    breaks: list[Break] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.breaks


def verify_tenant(
    tenant: str,
    records: Iterable[ChainRecord],
    *,
    anchor: Anchor | None = Anchor(),
    head: Head | None = None,
) -> tuple[int, Break | None]:
    """Check one tenant's records, given in chain order (by position); returns how many were
    checked and the first break. ``anchor=None`` trusts the first record's previous hash (an
    export that starts mid-chain); ``head`` also checks that nothing was cut from the end."""
    count = 0
    expected_pos = anchor.pos + 1 if anchor is not None else None
    expected_prev = anchor.hash if anchor is not None else None
    last: ChainRecord | None = None
    for record in records:
        count += 1
        here = (record.pos, record.seq, record.event_id)
        if expected_pos is not None and record.pos != expected_pos:
            if record.pos > expected_pos:
                problem = (
                    f"position {expected_pos}"
                    + (f"–{record.pos - 1}" if record.pos - 1 > expected_pos else "")
                    + " missing before it (removed)"
                )
            else:
                problem = f"out of order: expected position {expected_pos} (reordered)"
            return count, Break(tenant, *here, problem)
        if expected_prev is not None and record.prev_hash != expected_prev:
            return count, Break(
                tenant,
                *here,
                "its previous hash is not the hash of the record before it "
                "(a record was removed, changed or reordered)",
            )
        if digest(record, record.prev_hash) != record.hash:
            return count, Break(tenant, *here, "its hash does not match its fields (changed)")
        expected_pos, expected_prev, last = record.pos + 1, record.hash, record
    if head is not None:
        last_pos = last.pos if last is not None else (anchor.pos if anchor is not None else 0)
        last_hash = last.hash if last is not None else (anchor.hash if anchor else GENESIS)
        if (last_pos, last_hash) != (head.pos, head.hash):
            return count, Break(
                tenant,
                head.pos,
                None,
                "",
                f"the chain ends at position {last_pos} but the writer recorded {head.pos} "
                "(records removed from the end, or the last one changed)",
            )
    return count, None


def verify(
    records: Iterable[ChainRecord],
    *,
    anchors: Mapping[str, Anchor] | None = None,
    heads: Mapping[str, Head] | None = None,
) -> Verified:
    """Check records of any tenants, each tenant's in chain order. ``anchors=None`` trusts each
    tenant's first record's previous hash (an export that starts mid-chain)."""
    by_tenant: dict[str, list[ChainRecord]] = {}
    for record in records:
        by_tenant.setdefault(record.tenant, []).append(record)
    tenants = set(by_tenant) | set(heads or {})
    result = Verified()
    for tenant in sorted(tenants):
        anchor = None if anchors is None else anchors.get(tenant, Anchor())
        count, found = verify_tenant(
            tenant,
            by_tenant.get(tenant, []),
            anchor=anchor,
            head=(heads or {}).get(tenant),
        )
        result.records[tenant] = count
        if found is not None:
            result.breaks.append(found)
    return result


def chain(records: Iterable[ChainRecord], prev_hash: str) -> list[ChainRecord]:
    """``records`` of one tenant, in order, with their previous hashes and hashes set."""
    out = []
    for record in records:
        h = digest(record, prev_hash)
        out.append(replace(record, prev_hash=prev_hash, hash=h))
        prev_hash = h
    return out
