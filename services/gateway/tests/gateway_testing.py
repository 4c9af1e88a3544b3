"""What the gateway's tests share (imported by conftest and the tests; pytest's importlib mode
does not put the test directory on the path, so conftest does)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt

from zhongshu.runtime.hubconfig import Rate
from zhongshu.runtime.service import Service

MIGRATIONS = Path(__file__).resolve().parents[2] / "projector/src/zhongshu/projector/migrations"
SECRET = "gateway-tests-hs256-secret-of-at-least-32-bytes"
CALLBACK_KEY = "gateway-tests-callback-key"
GENEROUS = Rate(count=100_000, period_s=60)


def new_tenant() -> str:
    return "t" + uuid.uuid4().hex[:12]


def mint(
    tenant: str,
    *scopes: str,
    secret: str = SECRET,
    algorithm: str = "HS256",
    ttl_s: float = 3600,
    headers: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    """A token as an identity provider would sign it (claims override the defaults)."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "sub": "test-client",
        "tenant": tenant,
        "scope": " ".join(scopes),
        "iat": now,
        "exp": now + int(ttl_s),
        **claims,
    }
    return jwt.encode(payload, secret, algorithm=algorithm, headers=headers)


class Api:
    """A started gateway, its HTTP client, and tokens for one tenant."""

    def __init__(self, service: Service, client: httpx.AsyncClient, tenant: str) -> None:
        self.service = service
        self.client = client
        self.tenant = tenant

    def token(self, *scopes: str, tenant: str | None = None, **claims: Any) -> str:
        return mint(tenant or self.tenant, *scopes, **claims)

    def auth(self, *scopes: str, tenant: str | None = None, **claims: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(*scopes, tenant=tenant, **claims)}"}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.service.health_port}"


StartGateway = Callable[..., Awaitable[Api]]
"""The `start_gateway` fixture: settings overrides in, a started gateway out."""
