"""Reading the audit trail from the warm tier (the projector's ``audit`` and ``audit_chain``
tables): pages of records for `zhongshu audit ls|export` and ``GET /api/v1/audit``, and the
chain checks of `zhongshu audit verify` and the watchdog (``auditchain`` does the hashing)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from zhongshu.runtime.auditchain import Anchor, ChainRecord, Head, Verified, verify_tenant

COLUMNS = (
    "stream_seq, tenant, kind, actor, action, outcome, data, at, event_id, pos, prev_hash, hash"
)
CHUNK = 5000


@dataclass(frozen=True, slots=True)
class Filters:
    tenant: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    action: str | None = None
    """An action (`config.pushed`), or a prefix ending in `.` or `*` (`dlq.`, `alert.*`)."""
    actor: str | None = None


def _where(filters: Filters, args: list[Any]) -> list[str]:
    clauses = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if filters.tenant is not None:
        clauses.append(f"tenant = {arg(filters.tenant)}")
    if filters.since is not None:
        clauses.append(f"at >= {arg(filters.since)}")
    if filters.until is not None:
        clauses.append(f"at < {arg(filters.until)}")
    if filters.action:
        if filters.action.endswith(("*", ".")):
            prefix = filters.action.rstrip("*")
            escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            clauses.append(f"action LIKE {arg(escaped + '%')}")
        else:
            clauses.append(f"action = {arg(filters.action)}")
    if filters.actor is not None:
        clauses.append(f"actor = {arg(filters.actor)}")
    return clauses


def row_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored record as plain values (``data`` decoded)."""
    out = dict(row)
    data = out.get("data")
    out["data"] = msgspec.json.decode(data) if isinstance(data, str | bytes) else data
    return out


async def newest_first(
    conn: asyncpg.Connection,
    filters: Filters,
    *,
    after: tuple[datetime, int] | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """A page of records, newest first; ``after`` is the (time, stream sequence) of the last
    record of the previous page."""
    args: list[Any] = []
    clauses = _where(filters, args)
    if after is not None:
        at, seq = after
        clauses.append(f"(at, stream_seq) < (${len(args) + 1}, ${len(args) + 2})")
        args += [at, seq]
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    args.append(limit)
    rows = await conn.fetch(
        f"SELECT {COLUMNS} FROM audit {where} ORDER BY at DESC, stream_seq DESC LIMIT ${len(args)}",
        *args,
    )
    return [row_dict(r) for r in rows]


async def in_chain_order(conn: asyncpg.Connection, filters: Filters, *, chunk: int = CHUNK) -> Any:
    """Every matching record, by tenant and chain position (records written before the chain
    existed first, by sequence): the order an export is verified in. An async iterator."""
    args: list[Any] = []
    clauses = _where(filters, args)
    base = len(args)
    key: tuple[str, int, int] = ("", -1, -1)
    while True:
        page = [
            *clauses,
            f"(tenant, COALESCE(pos, 0), stream_seq) > (${base + 1}, ${base + 2}, ${base + 3})",
        ]
        rows = await conn.fetch(
            f"SELECT {COLUMNS} FROM audit WHERE {' AND '.join(page)} "
            f"ORDER BY tenant, COALESCE(pos, 0), stream_seq LIMIT ${base + 4}",
            *args,
            *key,
            chunk,
        )
        for row in rows:
            yield row_dict(row)
        if len(rows) < chunk:
            return
        last = rows[-1]
        key = (last["tenant"], last["pos"] or 0, last["stream_seq"])


def chain_record(row: Mapping[str, Any]) -> ChainRecord:
    """A stored or exported record as the chain covers it (a chained one: ``pos`` is set)."""
    at = row["at"]
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    data = row["data"]
    if isinstance(data, str | bytes):
        data = msgspec.json.decode(data)
    return ChainRecord(
        tenant=row["tenant"],
        pos=int(row["pos"]),
        seq=int(row["stream_seq"]),
        event_id=row.get("event_id") or "",
        kind=row["kind"],
        actor=row["actor"],
        action=row["action"],
        outcome=row["outcome"],
        at=at,
        data=data,
        prev_hash=row["prev_hash"] or "",
        hash=row["hash"] or "",
    )


async def ends(
    conn: asyncpg.Connection, tenant: str | None = None
) -> dict[str, tuple[Anchor, Head]]:
    """Each tenant's anchor and head, as the writer recorded them."""
    rows = await conn.fetch(
        "SELECT tenant, pos, hash, anchor_pos, anchor_hash FROM audit_chain"
        + (" WHERE tenant = $1" if tenant is not None else ""),
        *([tenant] if tenant is not None else []),
    )
    return {
        r["tenant"]: (Anchor(r["anchor_pos"], r["anchor_hash"]), Head(r["pos"], r["hash"]))
        for r in rows
    }


async def verify_stored(
    conn: asyncpg.Connection,
    *,
    tenant: str | None = None,
    tail: int | None = None,
    chunk: int = CHUNK,
) -> Verified:
    """Recompute each tenant's chain from the warm tier, in chunks: all of it, or only its last
    ``tail`` records (trusting the previous hash of the first of them: the watchdog's cheap
    check). The head must match the last record, so records cut from the end show too."""
    result = Verified()
    for name, (anchor, head) in sorted((await ends(conn, tenant)).items()):
        start: Anchor | None = anchor
        low = anchor.pos
        if tail is not None and head.pos - tail > anchor.pos:
            start, low = None, head.pos - tail
        checked, found = 0, None
        while found is None:
            rows = await conn.fetch(
                f"SELECT {COLUMNS} FROM audit WHERE tenant = $1 AND pos > $2 ORDER BY pos LIMIT $3",
                name,
                low,
                chunk,
            )
            records = [chain_record(r) for r in rows]
            last_chunk = len(rows) < chunk
            count, found = verify_tenant(
                name, records, anchor=start, head=head if last_chunk else None
            )
            checked += count
            if last_chunk or found is not None:
                break
            start, low = Anchor(records[-1].pos, records[-1].hash), records[-1].pos
        result.records[name] = checked
        if found is not None:
            result.breaks.append(found)
    return result
