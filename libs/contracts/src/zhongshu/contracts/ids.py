"""Message and event ids: deterministic where a retry must be recognised, unique where new.

Every publish carries `Nats-Msg-Id`, and a handler that runs twice on a redelivered input must
publish the same ids again, so JetStream (within its window) and downstream dedupe drop the copy.
"""

import hashlib
import os
import re
import time
import uuid
from typing import Final

MAX_READABLE_ID_LENGTH: Final = 120
"""Derived ids up to this length stay readable (`parent:stage`); longer ones are hashed."""

_HASHED_ID_HEX_CHARS: Final = 40  # 160 bits: collisions are not a practical concern
# Characters that are safe in a NATS header value and in log lines; anything else is hashed.
_READABLE = re.compile(r"[A-Za-z0-9._=+/@-]+")
_READABLE_PARENT = re.compile(r"[A-Za-z0-9._=+/@:-]+")


def derive_msg_id(parent_id: str, stage: str) -> str:
    """The id of what a stage publishes in response to the message `parent_id`.

    Deterministic, so a redelivered input yields the same output ids. Readable as
    `<parent_id>:<stage>` (e.g. `evt-1:router`, `evt-1:router:reply.final`) while that is short
    and made of header-safe characters. The stage holds no `:`, so parent and stage can always be
    told apart and distinct pairs give distinct ids. Otherwise, the result is 40 hex characters of
    sha256, which hold no `:` and so never equal a readable id.
    """
    if not parent_id or not stage:
        raise ValueError(f"parent_id and stage must not be empty: {parent_id!r}, {stage!r}")
    readable = f"{parent_id}:{stage}"
    if (
        len(readable) <= MAX_READABLE_ID_LENGTH
        and _READABLE_PARENT.fullmatch(parent_id)
        and _READABLE.fullmatch(stage)
    ):
        return readable
    material = f"{len(parent_id)}:{parent_id}:{stage}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(material).hexdigest()[:_HASHED_ID_HEX_CHARS]


def schedule_fire_id(template_id: str, schedule_next: str) -> str:
    """A distinct, deterministic id for one firing of a schedule.

    Every firing carries the schedule's body verbatim, so its envelope id and task id are the
    same each time. The server stamps each firing with `Nats-Schedule-Next` (the time of the next
    firing, or `purge` for a one-shot), which differs between firings and is stable across
    redeliveries of one firing.
    """
    compact = schedule_next.replace("-", "").replace(":", "")
    return derive_msg_id(template_id, f"fire.{compact}")


def new_event_id() -> str:
    """A new unique id (UUIDv7, 32 hex chars): time-ordered, so ids sort roughly by creation."""
    unix_ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (unix_ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version 7
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # RFC 9562 variant
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF  # rand_b, 62 bits
    return uuid.UUID(int=value).hex
