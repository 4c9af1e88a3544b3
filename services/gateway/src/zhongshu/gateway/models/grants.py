"""Grants (roles of chat users per app) and revoked tokens: the HTTP shapes."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from zhongshu.contracts.grants import Role
from zhongshu.gateway.models.common import ApiModel, Page

AppName = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
        description="an app (bot) of the tenant, as `apps:` in zhongshu.yaml names it",
        examples=["ops-bot"],
    ),
]
UserId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x2e\x30-\x7e]+$",
        description="the user's platform id (Feishu open_id, DingTalk staff id): printable "
        "ASCII without spaces or `/`",
        examples=["ou_7d8a6e6df7621556ce0d21922b676706ccs"],
    ),
]


class GrantCreate(ApiModel):
    """Give `user` the `role` in `app`: every role lets them talk to the app; `admin` also
    manages grants in chat and handles alert cards; the agent sees the sender's roles."""

    app: AppName
    user: UserId
    role: Role
    note: str = Field(default="", max_length=500)


class Grant(BaseModel):
    app: str
    user: str
    role: str
    granted_by: str = ""
    granted_at: str = ""
    note: str = ""


class GrantList(Page):
    items: list[Grant]


class TokenRevocation(ApiModel):
    """Refuse the token whose `jti` this is, from now on (every gateway replica, at once)."""

    jti: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:-]+$")
    expires_at: int | None = Field(
        default=None,
        ge=0,
        le=4_102_444_800,  # 2100-01-01
        description="the token's `exp` (Unix seconds), if known: the revocation is kept until "
        "then; without it, until deleted",
    )
    reason: str = Field(default="", max_length=500)


class RevokedToken(BaseModel):
    jti: str
    revoked_by: str
    revoked_at: str
    expires_at: int | None = None
    reason: str = ""
