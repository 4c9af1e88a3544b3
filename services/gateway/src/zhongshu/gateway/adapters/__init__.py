"""The gateway's I/O, one class per system (NATS streams and buckets, Redis, PostgreSQL), each
raising :class:`Unavailable` when its system cannot be reached, which the API answers with 503."""

from __future__ import annotations


class Unavailable(Exception):
    """A store the operation needs cannot be reached; the text names it (never a URL)."""
