"""What the `grants` and `revoked_tokens` buckets hold: a role granted to a chat user of one app
of a tenant (one key per grant, so granting is a put and revoking a delete), and the ids (`jti`)
of revoked API tokens, each kept until the token would have expired anyway."""

from __future__ import annotations

import base64
import re
from typing import Final, Literal, get_args

import msgspec

Role = Literal["admin", "operator", "viewer", "user"]
ROLES: Final[tuple[str, ...]] = get_args(Role)
"""`admin` also manages grants and presses alert buttons; `operator` and `viewer` are passed to
the agent as the sender's roles; `user` only lets someone talk to the app (like `access.users`).
Every role lets its holder talk to the app."""

ROLE_ADMIN: Final = "admin"

# NATS KV keys allow `A-Za-z0-9-_=/.`; `.` separates the tokens. A platform id outside that set
# (a DingTalk staff id may hold `$` or `:`) is written base64url behind a `=`.
_PLAIN = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
_ENCODED_MARK = "="


class Grant(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """``role`` granted to ``user`` (a platform user id) for ``app`` of ``tenant``."""

    tenant: str
    app: str
    user: str
    role: str
    granted_by: str = ""
    """Who granted it: `api:<subject>` or `chat:<user id>`."""
    granted_at: str = ""
    """ISO 8601, UTC."""
    note: str = ""


class RevokedToken(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An API token (by `jti`) the gateway refuses from now on."""

    jti: str
    tenant: str = ""
    revoked_by: str = ""
    revoked_at: str = ""
    expires_at: int = 0
    """The token's `exp` (Unix seconds), when known: the key expires then."""
    reason: str = ""


GRANT_DECODER: Final = msgspec.json.Decoder(Grant)
REVOKED_DECODER: Final = msgspec.json.Decoder(RevokedToken)


def key_token(value: str) -> str:
    """One KV key token for ``value``, reversible (``value_of_token``)."""
    if _PLAIN.fullmatch(value):
        return value
    return _ENCODED_MARK + base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def value_of_token(token: str) -> str:
    if not token.startswith(_ENCODED_MARK):
        return token
    raw = token[len(_ENCODED_MARK) :]
    return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()


def grant_key(tenant: str, app: str, user: str, role: str) -> str:
    """`<tenant>.<app>.<user>.<role>`: a tenant's grants sort by app, then user."""
    return ".".join((tenant, key_token(app), key_token(user), role))


def grants_of_tenant(tenant: str) -> str:
    """The key filter of every grant of ``tenant``."""
    return f"{tenant}.>"


def revoked_key(jti: str) -> str:
    return key_token(jti)
