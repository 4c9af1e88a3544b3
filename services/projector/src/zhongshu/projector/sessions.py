"""Session state on pooled connections. asyncpg resets every connection the pool gets back with
``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``: one more round trip, and
four statements for PostgreSQL, per batch the writers commit. Nothing in the projector sets a
session variable, listens or keeps a cursor past its transaction; only session-level advisory
locks (migrations, pruning) outlive a transaction, so the connections that took one, and only
those, get the full reset."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg

# Backends whose session holds state a pooled connection must not carry to its next user.
_SESSION_STATE: set[int] = set()


@contextlib.asynccontextmanager
async def session_lock(
    conn: asyncpg.Connection, key: int, *, wait: bool = True
) -> AsyncIterator[bool]:
    """A session-level advisory lock on ``key`` (``pg_advisory_lock``, or ``pg_try_advisory_lock``
    without ``wait``: then the value says whether it was taken), released on the way out. The
    connection is marked, so its return to the pool resets the session fully even if the unlock
    did not run."""
    _SESSION_STATE.add(conn.get_server_pid())
    if wait:
        await conn.execute("SELECT pg_advisory_lock($1)", key)
        taken = True
    else:
        taken = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", key))
    try:
        yield taken
    finally:
        if taken:
            await conn.execute("SELECT pg_advisory_unlock($1)", key)


async def reset_session(conn: asyncpg.Connection) -> None:
    """The pool's ``reset``, run as a connection comes back (asyncpg has already rolled back a
    transaction left open): asyncpg's full reset for a connection that took a session lock."""
    pid = conn.get_server_pid()
    if pid in _SESSION_STATE:
        _SESSION_STATE.discard(pid)
        await conn.execute(conn.get_reset_query())
