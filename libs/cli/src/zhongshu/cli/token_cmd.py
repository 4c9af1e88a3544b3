"""``zhongshu token create``: mint an HS256 bearer token for the gateway's API, signed with
``ZHONGSHU_JWT_SECRET`` (the key the gateway verifies with). Operators hand these to API clients;
identity providers issue RS256/ES256 tokens instead (``ZHONGSHU_JWT_JWKS_URL``).

Signed with the standard library (RFC 7519 / RFC 7515 with HMAC-SHA256), so the CLI needs no JWT
package; the gateway verifies with PyJWT."""

from __future__ import annotations

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
SCOPES = ("tasks:read", "tasks:write", "admin")
MIN_SECRET_LENGTH = 32
_TENANT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
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
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return claims


@app.command("create")
def create(
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant the token acts for.")],
    scope: Annotated[
        list[str],
        typer.Option(
            "--scope",
            metavar="SCOPE",
            help=f"Repeat for several: {', '.join(SCOPES)} (admin: definitions and all else).",
        ),
    ],
    ttl: Annotated[str, typer.Option("--ttl", help="Lifetime: 30m, 1h, 7d...")] = "24h",
    subject: Annotated[
        str, typer.Option("--subject", help="Who holds it (`sub`; tasks show `api:<subject>`).")
    ] = "operator",
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
        print_token(
            tenant=tenant,
            scopes=scope,
            ttl=ttl,
            subject=subject,
            secret=secret,
            nats_url=_hub(data_dir),
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
