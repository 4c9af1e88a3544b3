"""Who is calling: a JWT bearer token, checked for signature, `exp`, `nbf`, `iss` and `aud`, whose
`tenant` claim scopes every read and write and whose scopes gate each operation.

The algorithm is pinned by the key source, never taken from the token: HS256 only with the
shared secret, RS256/ES256 only with keys from the JWKS. So `alg: none` and the classic
confusion (an RS256 public key used as an HS256 secret) are refused before any verification."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Final

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from zhongshu.contracts.definitions import ID_PATTERN
from zhongshu.gateway.problems import ProblemError
from zhongshu.runtime.clientaddr import client_address

READ: Final = "tasks:read"
WRITE: Final = "tasks:write"
ADMIN: Final = "admin"
"""Implies every other scope: definitions (schedules, triggers, workflows, subscriptions)."""
SCOPES: Final = (READ, WRITE, ADMIN)

HMAC_ALGORITHMS: Final = ("HS256",)
JWKS_ALGORITHMS: Final = ("RS256", "ES256")
REALM: Final = 'Bearer realm="zhongshu"'

bearer = HTTPBearer(
    auto_error=False,
    bearerFormat="JWT",
    description=(
        "A JWT with a `tenant` claim and scopes (`scope`, space-separated, or `scopes`, a list): "
        "`tasks:read`, `tasks:write`, `admin` (a team's API key also carries `events:publish` and "
        "a `team` claim). Operators mint one with `zhongshu token create`; a token whose `jti` "
        "was revoked (`zhongshu token revoke`) is refused."
    ),
)


@dataclass(frozen=True)
class Principal:
    """The caller, as its verified token says."""

    tenant: str
    subject: str
    token_id: str
    """What per-token limits count against: `jti`, else `sub`, else a hash of the token."""
    scopes: frozenset[str]
    jti: str = ""
    """The token's `jti`, when it has one: what `zhongshu token revoke` names."""
    team: str = ""
    """An API key's `team` claim: the team whose `events.<team>.>` it may publish to."""

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or ADMIN in self.scopes

    @property
    def requested_by(self) -> str:
        return f"api:{self.subject}"


class Unauthorized(ProblemError):
    def __init__(self, detail: str) -> None:
        challenge = f'{REALM}, error="invalid_token", error_description="{_quoted(detail)}"'
        super().__init__(401, detail, kind="invalid-token", headers={"WWW-Authenticate": challenge})


def _quoted(text: str) -> str:
    return text.replace("\\", "").replace('"', "'")


class TokenVerifier:
    """Verifies bearer tokens against the configured key sources."""

    def __init__(
        self,
        *,
        secret: str | None,
        jwks_url: str | None,
        issuer: str | None,
        audience: str | None,
        leeway_s: float,
    ) -> None:
        self._secret = secret
        self._issuer = issuer
        self._audience = audience
        self._leeway_s = leeway_s
        # Keys are cached; an unknown `kid` refetches the set (at most once per cooldown).
        self._jwks = (
            jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=300, timeout=5)
            if jwks_url
            else None
        )

    async def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise Unauthorized("the bearer token is not a JWT") from None
        algorithm = header.get("alg")
        key = await self._key_for(algorithm, token)
        required = ["exp", "tenant"]
        if self._issuer:
            required.append("iss")
        if self._audience:
            required.append("aud")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[str(algorithm)],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway_s,
                options={"require": required},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthorized("the token is not valid yet (nbf)") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized("the token is not meant for this audience") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized("the token's issuer is not trusted") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"the token has no `{exc.claim}` claim") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("the token's signature does not verify") from None
        except jwt.PyJWTError:
            raise Unauthorized("the token is invalid") from None
        return principal_from(claims, token)

    async def _key_for(self, algorithm: object, token: str) -> Any:
        if algorithm in HMAC_ALGORITHMS and self._secret is not None:
            return self._secret
        if algorithm in JWKS_ALGORITHMS and self._jwks is not None:
            jwks = self._jwks
            try:
                # PyJWKClient fetches with urllib (blocking): off the event loop.
                signing_key = await asyncio.to_thread(jwks.get_signing_key_from_jwt, token)
            except jwt.PyJWKClientConnectionError:
                raise ProblemError(
                    503, "the identity provider's keys (JWKS) cannot be fetched", kind="jwks"
                ) from None
            except (jwt.PyJWKClientError, jwt.PyJWTError):
                raise Unauthorized("no key of the identity provider matches the token") from None
            return signing_key.key
        raise Unauthorized(f"tokens signed with {str(algorithm)[:16]!r} are not accepted")


def principal_from(claims: dict[str, Any], token: str) -> Principal:
    tenant = claims.get("tenant")
    if not isinstance(tenant, str) or not ID_PATTERN.fullmatch(tenant):
        raise Unauthorized("the token's `tenant` claim is not a valid tenant id")
    subject = claims.get("sub")
    subject = subject if isinstance(subject, str) and subject else ""
    jti = claims.get("jti")
    token_id = (
        jti
        if isinstance(jti, str) and jti
        else subject or hashlib.sha256(token.encode()).hexdigest()[:32]
    )
    team = claims.get("team")
    return Principal(
        tenant=tenant,
        subject=subject or token_id,
        token_id=token_id,
        scopes=frozenset(scopes_of(claims)),
        jti=jti if isinstance(jti, str) else "",
        team=team if isinstance(team, str) else "",
    )


def scopes_of(claims: dict[str, Any]) -> list[str]:
    """OAuth 2 `scope` (space-separated, RFC 8693) or a `scopes` list, whichever is given."""
    found: list[str] = []
    scope = claims.get("scope")
    if isinstance(scope, str):
        found.extend(scope.split())
    scopes = claims.get("scopes")
    if isinstance(scopes, list):
        found.extend(s for s in scopes if isinstance(s, str))
    return found


# --- FastAPI dependencies ----------------------------------------------------------------------

PRINCIPAL_STATE = "principal"


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


async def authenticated(request: Request, credentials: Credentials) -> Principal:
    """The verified caller (401 without a valid token)."""
    if credentials is None:
        raise ProblemError(
            401,
            "a bearer token is required",
            kind="missing-token",
            headers={"WWW-Authenticate": REALM},
        )
    from zhongshu.gateway.context import gateway  # context imports this module

    gw = gateway(request)
    try:
        principal = await gw.tokens.verify(credentials.credentials)
        if principal.jti in gw.revoked:  # an in-memory set the bucket's watch keeps current
            raise Unauthorized("the token has been revoked")
    except Unauthorized as refused:
        peer = request.client.host if request.client else ""
        gw.audit.refused(
            client_address(peer, request.headers.get("x-forwarded-for")), refused.detail
        )
        raise
    setattr(request.state, PRINCIPAL_STATE, principal)
    return principal


Caller = Annotated[Principal, Depends(authenticated)]
"""Any valid token."""


def scoped(scope: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller, who must hold ``scope`` (or `admin`); 403 otherwise."""

    challenge = f'{REALM}, error="insufficient_scope", scope="{scope}"'

    async def check(principal: Caller) -> Principal:
        if not principal.allows(scope):
            raise ProblemError(
                403,
                f"this operation needs the `{scope}` scope",
                kind="insufficient-scope",
                headers={"WWW-Authenticate": challenge},
            )
        return principal

    check.__name__ = f"needs_{scope.replace(':', '_')}"
    return check


Reader = Annotated[Principal, Depends(scoped(READ))]
Writer = Annotated[Principal, Depends(scoped(WRITE))]
Admin = Annotated[Principal, Depends(scoped(ADMIN))]
