"""``zhongshu token create``: mint an HS256 bearer token for the gateway's API, signed with
``ZHONGSHU_JWT_SECRET`` (the key the gateway verifies with). Operators hand these to API clients;
identity providers issue RS256/ES256 tokens instead (``ZHONGSHU_JWT_JWKS_URL``).

Signed with the standard library (RFC 7519 / RFC 7515 with HMAC-SHA256), so the CLI needs no JWT
package; the gateway verifies with PyJWT."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer

from zhongshu.cli import localsecrets, runstate
from zhongshu.cli.console import EXIT_USAGE, CliError, console, fail, warn

SECRET_ENV = "ZHONGSHU_JWT_SECRET"
ISSUER_ENV = "ZHONGSHU_JWT_ISSUER"
AUDIENCE_ENV = "ZHONGSHU_JWT_AUDIENCE"
SCOPES = ("tasks:read", "tasks:write", "admin", "events:publish")
EVENTS_PUBLISH = "events:publish"
"""What a team's API key carries (`--team`): publishing to `events.<team>.>`."""
MIN_SECRET_LENGTH = 32
_TENANT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_JTI = re.compile(r"^[A-Za-z0-9._:-]{1,200}$")
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}

app = typer.Typer(help="Mint API tokens for the gateway.", no_args_is_help=True)


def parse_ttl(text: str) -> int:
    """`90s`, `30m`, `1h`, `7d`, `2w` → seconds."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or int(match[1]) == 0:
        raise CliError(f"--ttl {text!r}: give a duration like 30m, 1h, 7d", code=EXIT_USAGE)
    return int(match[1]) * _UNIT_S[match[2]]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def sign_hs256(claims: dict[str, Any], secret: str) -> str:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def claims_for(
    *,
    tenant: str,
    scopes: list[str],
    ttl_s: int,
    subject: str,
    issuer: str | None,
    audience: str | None,
    now: int,
    team: str | None = None,
) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "sub": subject,
        "tenant": tenant,
        "scope": " ".join(dict.fromkeys(scopes)),
        "iat": now,
        "nbf": now,
        "exp": now + ttl_s,
        "jti": uuid.uuid4().hex,  # what per-token rate limits count against
    }
    if team:
        claims["team"] = team
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return claims


@app.command("create")
def create(
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant the token acts for.")],
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            metavar="SCOPE",
            help=f"Repeat for several: {', '.join(SCOPES)} (admin: definitions and all else).",
        ),
    ] = None,
    ttl: Annotated[
        str | None, typer.Option("--ttl", help="Lifetime: 30m, 1h, 7d... (24h; 365d with --team)")
    ] = None,
    subject: Annotated[
        str | None,
        typer.Option(
            "--subject",
            help="Who holds it (`sub`; tasks show `api:<subject>`): operator, or team:<team>.",
        ),
    ] = None,
    team: Annotated[
        str | None,
        typer.Option(
            "--team",
            help="An API key for a team: a `team` claim and the `events:publish` scope "
            "(events.<team>.>), long-lived; revoke it with `zhongshu token revoke`.",
        ),
    ] = None,
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir",
            help="Where `zhongshu up` keeps the secret it generated when ZHONGSHU_JWT_SECRET "
            "is not set.",
        ),
    ] = runstate.DEFAULT_DATA_DIR,
) -> None:
    """Print an HS256 token signed with ZHONGSHU_JWT_SECRET (with `iss`/`aud` from
    ZHONGSHU_JWT_ISSUER/ZHONGSHU_JWT_AUDIENCE when set), for `Authorization: Bearer <token>`.
    Without the variable, the secret `zhongshu up` generated in its data directory is used."""
    try:
        secret = os.environ.get(SECRET_ENV, "")
        generated = localsecrets.secrets_dir(data_dir) / localsecrets.GENERATED[SECRET_ENV]
        if not secret and generated.exists():
            secret = generated.read_text().strip()
        if team is not None and not _TENANT.fullmatch(team):
            raise CliError(f"--team {team!r}: lower-case letters, digits, - and _", code=EXIT_USAGE)
        scopes = list(scope or [])
        if team:
            scopes = [*scopes, EVENTS_PUBLISH]
        if not scopes:
            raise CliError("give --scope (or --team for a team's API key)", code=EXIT_USAGE)
        print_token(
            tenant=tenant,
            scopes=scopes,
            ttl=ttl or ("365d" if team else "24h"),
            subject=subject or (f"team:{team}" if team else "operator"),
            secret=secret,
            nats_url=_hub(data_dir),
            team=team,
        )
    except CliError as exc:
        fail(str(exc), code=exc.code)


def _hub(data_dir: Path) -> str | None:
    """The hub to audit the issue in: ZHONGSHU_NATS_URL or a running `zhongshu up`; None when
    neither (a token minted for a hub elsewhere is not audited here)."""
    url = runstate.resolve_nats_url(data_dir)
    explicit = os.environ.get(runstate.NATS_URL_ENV)
    return url if explicit or url != runstate.DEFAULT_NATS_URL else None


def print_token(
    *,
    tenant: str,
    scopes: list[str],
    ttl: str,
    subject: str,
    secret: str | None = None,
    nats_url: str | None = None,
    team: str | None = None,
) -> None:
    if secret is None:
        secret = os.environ.get(SECRET_ENV, "")
    if not secret:
        raise CliError(
            f"{SECRET_ENV} is not set (and no hub data directory has a generated one): set it "
            "to the gateway's HS256 key (the same value the gateway runs with) to sign tokens"
        )
    if len(secret) < MIN_SECRET_LENGTH:
        raise CliError(f"{SECRET_ENV} is shorter than {MIN_SECRET_LENGTH} characters")
    if not _TENANT.fullmatch(tenant):
        raise CliError(f"--tenant {tenant!r}: lower-case letters, digits, - and _", code=EXIT_USAGE)
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise CliError(f"unknown scope {unknown[0]!r}; use {', '.join(SCOPES)}", code=EXIT_USAGE)
    claims = claims_for(
        tenant=tenant,
        scopes=scopes,
        ttl_s=parse_ttl(ttl),
        subject=subject,
        issuer=os.environ.get(ISSUER_ENV) or None,
        audience=os.environ.get(AUDIENCE_ENV) or None,
        now=int(time.time()),
        team=team,
    )
    # Only the token on stdout, so `TOKEN=$(zhongshu token create ...)` works.
    console.print(sign_hs256(claims, secret), soft_wrap=True, highlight=False, markup=False)
    if nats_url:
        audit_issued(nats_url, claims)


def audit_issued(nats_url: str, claims: dict[str, Any]) -> None:
    """`token.issued` in the tenant's audit trail (the claims, never the token)."""
    import asyncio

    from zhongshu.runtime import auditing

    not_audited = asyncio.run(
        auditing.record_at(
            nats_url,
            client_name="zhongshu-cli-token",
            source="zhongshu/cli",
            actor=auditing.operator(),
            action="token.issued",
            target=f"token:{claims['jti']}",
            kind="token",
            tenant=claims["tenant"],
            detail=f"for {claims['sub']} with scope {claims['scope']!r}",
            labels={
                "jti": claims["jti"],
                "sub": claims["sub"],
                "scope": claims["scope"],
                "exp": str(claims["exp"]),
            },
        )
    )
    if not_audited:
        warn(f"the token was issued, but is not in the audit trail ({not_audited})")


@app.command("revoke")
def revoke(
    jti: Annotated[
        str | None,
        typer.Argument(help="The token's `jti` (token.issued in the audit trail shows it)."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", help="The token itself, instead of its jti (read, not verified)."),
    ] = None,
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant it was issued for.")] = "_",
    expires_at: Annotated[
        int | None,
        typer.Option("--expires-at", help="The token's `exp` (Unix s): kept until then."),
    ] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why, for the audit trail.")] = "",
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="A running `zhongshu up`'s data directory.")
    ] = runstate.DEFAULT_DATA_DIR,
) -> None:
    """Refuse a token from now on: every gateway answers it with 401 (they watch the
    `revoked_tokens` bucket; no restart). Kept until the token's `exp`, or for ever when it is
    not known. Needs the hub's bus: ZHONGSHU_NATS_URL or a running `zhongshu up`."""
    try:
        if token is not None:
            claims = unverified_claims(token)
            jti = jti or str(claims.get("jti") or "")
            tenant = str(claims.get("tenant") or tenant)
            exp = claims.get("exp")
            expires_at = expires_at or (exp if isinstance(exp, int) else None)
        if not jti or not _JTI.fullmatch(jti):
            raise CliError(
                "give the token's jti (or --token); it has no usable jti", code=EXIT_USAGE
            )
        nats_url = runstate.resolve_nats_url(data_dir)
        created = asyncio.run(
            _revoke(nats_url, jti=jti, tenant=tenant, expires_at=expires_at, reason=reason)
        )
    except CliError as exc:
        fail(str(exc), code=exc.code)
    console.print(f"revoked {jti}" if created else f"{jti} was already revoked")


def unverified_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, without verifying it: only to find which token to revoke."""
    try:
        payload = token.strip().split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError) as exc:
        raise CliError(f"--token is not a JWT ({type(exc).__name__})", code=EXIT_USAGE) from None
    if not isinstance(claims, dict):
        raise CliError("--token is not a JWT (its payload is not an object)", code=EXIT_USAGE)
    return claims


async def _revoke(
    nats_url: str, *, jti: str, tenant: str, expires_at: int | None, reason: str
) -> bool:
    from zhongshu.contracts.grants import RevokedToken
    from zhongshu.contracts.streams import REVOKED_TOKENS_KV
    from zhongshu.runtime import auditing, bus, revocations

    actor = auditing.operator()
    record = RevokedToken(
        jti=jti,
        tenant=tenant,
        revoked_by=f"cli:{actor}",
        revoked_at=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        expires_at=expires_at or 0,
        reason=reason,
    )
    try:
        nc = await bus.connect(nats_url, name="zhongshu-cli-token", timeout_s=5.0)
    except Exception as exc:
        raise CliError(f"cannot reach the hub's bus at {nats_url}: {exc}") from None
    try:
        try:
            kv = await bus.jetstream(nc).key_value(REVOKED_TOKENS_KV.bucket)
        except Exception:
            raise CliError(
                f"the hub has no {REVOKED_TOKENS_KV.bucket!r} bucket; run `zhongshu provision`"
            ) from None
        created = await revocations.revoke(kv, record) is not None
        if created:
            not_audited = await auditing.record(
                bus.jetstream(nc),
                source="zhongshu/cli",
                actor=actor,
                action="token.revoked",
                target=f"token:{jti}",
                kind="token",
                tenant=tenant,
                detail=reason,
                labels={"jti": jti, "exp": str(expires_at or "")},
            )
            if not_audited:
                warn(f"the token is revoked, but not in the audit trail ({not_audited})")
        return created
    finally:
        await nc.close()
