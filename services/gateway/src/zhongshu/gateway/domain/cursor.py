"""Opaque pagination cursors: the (time, id) of the last row a page showed, base64url JSON, so a
client cannot depend on the shape and the server can change it."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime

After = tuple[datetime, str] | None
"""The (time, id) of the last row of the previous page; None for the first page."""


class InvalidCursor(ValueError):
    pass


def encode(at: datetime, row_id: str) -> str:
    raw = json.dumps([at.isoformat(), row_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        at, row_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        when = datetime.fromisoformat(at)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor("the cursor is not one this API gave out") from None
    if not isinstance(row_id, str) or when.tzinfo is None:
        raise InvalidCursor("the cursor is not one this API gave out")
    return when, row_id
