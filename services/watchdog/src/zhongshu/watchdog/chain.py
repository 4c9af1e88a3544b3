"""The audit trail's hash chain in the warm tier (docs/operations/audit.md): at every check, the
last ``TAIL`` records of each tenant are recomputed (cheap, whatever the trail's length), and the
records verified before must still carry the hashes they had, so history rewritten with a
recomputed chain shows too. A break is critical and sticky: a person resolves it.

Only with ``ZHONGSHU_POSTGRES_URL`` set; PostgreSQL being down fails this check only."""

from __future__ import annotations

import logging

import asyncpg

from zhongshu.runtime import auditstore
from zhongshu.runtime.auditchain import Break
from zhongshu.watchdog.domain import Finding

log = logging.getLogger("zhongshu.watchdog.chain")

TAIL = 200
CHECK = "audit.chain"

VERIFIED_STILL = """
SELECT v.tenant, a.hash, c.anchor_pos, c.anchor_hash
FROM unnest($1::text[], $2::bigint[]) AS v (tenant, pos)
LEFT JOIN audit a ON a.tenant = v.tenant AND a.pos = v.pos
LEFT JOIN audit_chain c ON c.tenant = v.tenant
"""


class ChainCheck:
    def __init__(self, postgres_url: str, *, tail: int = TAIL) -> None:
        self._url = postgres_url
        self._tail = tail
        self._pool: asyncpg.Pool | None = None
        self._verified: dict[str, tuple[int, str]] = {}
        """tenant → (position, hash) of the last record a check found sound"""

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def run(self) -> list[Finding]:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self._url, min_size=0, max_size=1, command_timeout=30
            )
        async with self._pool.acquire() as conn:
            if await conn.fetchval("SELECT to_regclass('audit_chain')") is None:
                return []  # no projector has migrated this database yet
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                result = await auditstore.verify_stored(conn, tail=self._tail)
                breaks = {b.tenant: b for b in result.breaks}
                breaks.update(await self._rewritten(conn, set(breaks)))
                heads = await auditstore.ends(conn)
        for tenant, (_, head) in heads.items():
            if tenant not in breaks:
                self._verified[tenant] = (head.pos, head.hash)
        return [_finding(b) for b in breaks.values()]

    async def _rewritten(self, conn: asyncpg.Connection, skip: set[str]) -> dict[str, Break]:
        """Records verified at an earlier check whose hash is no longer the same."""
        known = [(t, v) for t, v in self._verified.items() if t not in skip]
        if not known:
            return {}
        rows = await conn.fetch(
            VERIFIED_STILL, [t for t, _ in known], [pos for _, (pos, _) in known]
        )
        found = {r["tenant"]: r for r in rows}
        out = {}
        for tenant, (pos, hash_) in known:
            row = found.get(tenant)
            now = row["hash"] if row is not None else None
            if now is None and row is not None and (row["anchor_pos"] or 0) >= pos:
                # Pruned by retention: the anchor took its place (and must say the same).
                now = hash_ if row["anchor_pos"] > pos else row["anchor_hash"]
            if now != hash_:
                problem = "removed" if now is None else "its hash changed (history rewritten)"
                out[tenant] = Break(
                    tenant, pos, None, "", f"verified at an earlier check, now {problem}"
                )
        return out


def _finding(found: Break) -> Finding:
    return Finding(
        check=CHECK,
        subject=found.tenant or "_",
        level="critical",
        title="the audit trail's hash chain is broken",
        detail=found.describe() + "; `zhongshu audit verify` checks the whole chain",
        sticky=True,
        occurrence=f"{found.tenant}-{found.pos}",
        labels={"tenant": found.tenant, "position": str(found.pos)},
    )
