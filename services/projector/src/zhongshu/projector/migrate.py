"""Versioned migrations of the warm tier: ``migrations/NNNN_name.sql``, applied in order, each in
its own transaction and recorded in ``schema_migrations``. Every replica runs this at start-up;
a session advisory lock makes the first one migrate and the others wait, then find nothing to do.

A migration is never edited once applied (the gateway and operators rely on what it did): a
changed file is reported with a warning naming it, and a new ``NNNN_*.sql`` does the change."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

from zhongshu.projector.sessions import session_lock

log = logging.getLogger("zhongshu.projector.migrate")

LOCK_KEY = 0x7A68_7368_7500_0001  # "zhshu" + 1: the projector's migration lock
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations() -> list[Migration]:
    """The migration files shipped in this package, in version order."""
    found: list[Migration] = []
    for entry in resources.files("zhongshu.projector").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match is None:
            continue
        found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a version: {versions}")
    return found


async def migrate(conn: asyncpg.Connection) -> list[Migration]:
    """Apply the migrations this database lacks; returns those applied (empty when none)."""
    async with session_lock(conn, LOCK_KEY):
        await conn.execute(CREATE_LEDGER)
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
        applied = {row["version"]: row["checksum"] for row in rows}
        done: list[Migration] = []
        for migration in migrations():
            recorded = applied.get(migration.version)
            if recorded is not None:
                if recorded != migration.checksum:
                    log.warning(
                        "migration %04d_%s changed after it was applied; the database keeps "
                        "the old version (add a new migration instead)",
                        migration.version,
                        migration.name,
                    )
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            log.info("applied migration %04d_%s", migration.version, migration.name)
            done.append(migration)
        return done
