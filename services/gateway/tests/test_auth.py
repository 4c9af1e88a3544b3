"""JWT bearer auth: only tokens signed with a configured key and algorithm, current, from the
expected issuer for the expected audience, are accepted; scopes gate operations; the `tenant`
claim isolates everything, and a refused request learns nothing about the data."""

from __future__ import annotations

import base64
import json
import time
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any

import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from nats.js.client import JetStreamContext
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from services.gateway.tests.gateway_testing import SECRET, Api, StartGateway, mint
from zhongshu.contracts import envelope as wire
from zhongshu.contracts import subjects
from zhongshu.contracts.events import AuditRecorded
from zhongshu.devstack.fakes.local_server import LocalServer
from zhongshu.devstack.testing import collect, eventually

PROMPT = "the quarterly numbers of ACME, confidential"


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def unsigned(tenant: str) -> str:
    """`alg: none`: a token anyone can make."""
    now = int(time.time())
    claims = {"tenant": tenant, "scope": "tasks:read admin", "exp": now + 3600, "sub": "x"}
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."


async def created_task(api: Api) -> str:
    answer = await api.client.post(
        "/api/v1/tasks", json={"prompt": PROMPT}, headers=api.auth("tasks:write")
    )
    assert answer.status_code == 202
    task_id: str = answer.json()["task_id"]
    return task_id


def refused_tokens(tenant: str) -> dict[str, str | None]:
    now = int(time.time())
    return {
        "no token": None,
        "not a JWT": "not.a.jwt",
        "alg none": unsigned(tenant),
        "wrong key": mint(tenant, "tasks:read", secret="another-secret-that-is-32-bytes-long!"),
        "expired": mint(tenant, "tasks:read", exp=now - 3600),
        "not yet valid": mint(tenant, "tasks:read", nbf=now + 3600),
        "no tenant": jwt.encode({"scope": "tasks:read", "exp": now + 60}, SECRET, "HS256"),
        "bad tenant": mint("a.b", "tasks:read"),
        "no exp": jwt.encode({"tenant": tenant, "scope": "tasks:read"}, SECRET, algorithm="HS256"),
        "HS512": _quietly(lambda: mint(tenant, "tasks:read", algorithm="HS512")),
    }


def _quietly(make: Callable[[], str]) -> str:
    # PyJWT warns that our HS256-sized test secret is short for HS512: beside the point here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make()


async def test_invalid_tokens_are_401_problems_that_show_nothing(api: Api) -> None:
    task_id = await created_task(api)
    for name, token in refused_tokens(api.tenant).items():
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        answer = await api.client.get(f"/api/v1/tasks/{task_id}", headers=headers)
        assert answer.status_code == 401, (name, answer.text)
        assert answer.headers["content-type"] == "application/problem+json", name
        assert answer.headers["www-authenticate"].startswith("Bearer"), name
        assert task_id not in answer.text.replace(f"/api/v1/tasks/{task_id}", ""), name
        assert PROMPT not in answer.text, name
    ok = await api.client.get(f"/api/v1/tasks/{task_id}", headers=api.auth("tasks:read"))
    assert ok.status_code == 200


async def test_issuer_and_audience_must_be_the_configured_ones(
    start_gateway: StartGateway,
) -> None:
    api = await start_gateway(jwt_issuer="https://idp.example", jwt_audience="zhongshu-api")
    good = {"iss": "https://idp.example", "aud": "zhongshu-api"}
    cases = {
        "wrong audience": {**good, "aud": "another-api"},
        "wrong issuer": {**good, "iss": "https://evil.example"},
        "no audience": {"iss": "https://idp.example"},
        "no issuer": {"aud": "zhongshu-api"},
    }
    for name, claims in cases.items():
        answer = await api.client.get("/api/v1/tasks/x", headers=api.auth("tasks:read", **claims))
        assert answer.status_code == 401, name
    answer = await api.client.get("/api/v1/tasks/x", headers=api.auth("tasks:read", **good))
    assert answer.status_code == 404  # accepted; there is simply no such task


async def test_an_operation_outside_the_token_scopes_is_403(api: Api, js: JetStreamContext) -> None:
    answer = await api.client.post(
        "/api/v1/tasks", json={"prompt": PROMPT}, headers=api.auth("tasks:read")
    )
    assert answer.status_code == 403
    assert answer.headers["content-type"] == "application/problem+json"
    assert 'error="insufficient_scope"' in answer.headers["www-authenticate"]
    assert await collect(js, subjects.task_requested(api.tenant), within_s=0.5) == []
    body = {"id": "nightly", "schedule": "@daily", "task": {"prompt": "x"}}
    for scopes in (("tasks:read", "tasks:write"), ()):
        refused = await api.client.post("/api/v1/schedules", json=body, headers=api.auth(*scopes))
        assert refused.status_code == 403
    read = await api.client.get("/api/v1/tasks", headers=api.auth("tasks:write"))
    assert read.status_code == 403
    # `scopes` as a list works too, and admin implies every scope.
    listed = await api.client.get("/api/v1/tasks", headers=api.auth(scopes=["tasks:read"]))
    assert listed.status_code == 200
    admin = await api.client.get("/api/v1/tasks", headers=api.auth("admin"))
    assert admin.status_code == 200


async def test_another_tenants_task_is_not_found_and_not_shown(api: Api) -> None:
    task_id = await created_task(api)
    intruder = api.auth("tasks:read", "tasks:write", "admin", tenant="intruder")
    for method, path in (
        ("GET", f"/api/v1/tasks/{task_id}"),
        ("POST", f"/api/v1/tasks/{task_id}/cancel"),
    ):
        answer = await api.client.request(method, path, headers=intruder)
        assert answer.status_code == 404, (method, path)
        assert PROMPT not in answer.text
    listed = await api.client.get("/api/v1/tasks", headers=intruder)
    assert PROMPT not in listed.text
    assert task_id not in listed.text


async def test_public_paths_need_no_token(api: Api) -> None:
    for path in ("/healthz", "/openapi.json", "/docs", "/"):
        answer = await api.client.get(path)
        assert answer.status_code == 200, path
    assert "/docs" in (await api.client.get("/")).text


# --- RS256 / ES256 through a JWKS -----------------------------------------------------------------


class IdentityProvider:
    """Signs tokens with an RSA and an EC key and serves their public halves as a JWKS."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        keys = [
            {
                **json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa.public_key())),
                "kid": "rsa-1",
                "alg": "RS256",
                "use": "sig",
            },
            {
                **json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec.public_key())),
                "kid": "ec-1",
                "alg": "ES256",
                "use": "sig",
            },
        ]
        self.fetches = 0

        async def jwks(_: Request) -> JSONResponse:
            self.fetches += 1
            return JSONResponse({"keys": keys})

        self.server = LocalServer(Starlette(routes=[Route("/.well-known/jwks.json", jwks)]))

    @property
    def url(self) -> str:
        return f"{self.server.base_url}/.well-known/jwks.json"

    def sign(self, tenant: str, kid: str, *scopes: str, **claims: Any) -> str:
        key, algorithm = (self.rsa, "RS256") if kid.startswith("rsa") else (self.ec, "ES256")
        now = int(time.time())
        payload = {
            "tenant": tenant,
            "sub": "idp-client",
            "scope": " ".join(scopes),
            "exp": now + 600,
            **claims,
        }
        return jwt.encode(payload, key, algorithm=algorithm, headers={"kid": kid})

    def public_pem(self) -> bytes:
        return self.rsa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


@pytest_asyncio.fixture
async def idp() -> AsyncIterator[IdentityProvider]:
    provider = IdentityProvider()
    await provider.server.start()
    try:
        yield provider
    finally:
        await provider.server.stop()


async def test_rs256_and_es256_tokens_verify_against_the_jwks(
    start_gateway: StartGateway, idp: IdentityProvider
) -> None:
    api = await start_gateway(jwt_secret=None, jwt_jwks_url=idp.url)
    for kid in ("rsa-1", "ec-1"):
        token = idp.sign(api.tenant, kid, "tasks:read")
        answer = await api.client.get("/api/v1/tasks", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200, (kid, answer.text)
    assert idp.fetches == 1  # the key set is cached


@pytest.mark.parametrize(
    "case",
    [
        "hs256 with the public key",
        "unknown kid",
        "other key",
        "alg none",
        "hs256 with the old secret",
    ],
)
async def test_tokens_not_signed_by_the_identity_provider_are_refused(
    start_gateway: StartGateway, idp: IdentityProvider, case: str
) -> None:
    api = await start_gateway(jwt_secret=None, jwt_jwks_url=idp.url)
    now = int(time.time())
    claims = {"tenant": api.tenant, "scope": "tasks:read", "exp": now + 600}
    if case == "hs256 with the public key":
        # Algorithm confusion: the public key (which anyone may fetch) used as an HMAC secret.
        token = _hmac_token(claims, idp.public_pem(), kid="rsa-1")
    elif case == "unknown kid":
        token = idp.sign(api.tenant, "rsa-9", "tasks:read")
    elif case == "other key":
        stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        token = jwt.encode(claims, stranger, algorithm="RS256", headers={"kid": "rsa-1"})
    elif case == "alg none":
        token = unsigned(api.tenant)
    else:
        token = mint(api.tenant, "tasks:read")
    answer = await api.client.get("/api/v1/tasks", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 401, answer.text
    assert answer.headers["content-type"] == "application/problem+json"


def _hmac_token(claims: dict[str, Any], secret: bytes, *, kid: str) -> str:
    import hashlib
    import hmac

    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{b64(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"


async def test_a_token_from_zhongshu_token_create_is_accepted(api: Api) -> None:
    from typer.testing import CliRunner

    from zhongshu.cli.main import app as cli

    result = CliRunner().invoke(
        cli,
        ["token", "create", "--tenant", api.tenant, "--scope", "tasks:read", "--ttl", "5m"],
        env={"ZHONGSHU_JWT_SECRET": SECRET, "COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    answer = await api.client.get(
        "/api/v1/tasks/x", headers={"Authorization": f"Bearer {result.output.strip()}"}
    )
    assert answer.status_code == 404  # authenticated; no such task


async def test_refused_tokens_are_audited_per_source_at_most_once_a_second(
    api: Api, js: JetStreamContext
) -> None:
    async def refusals() -> list[AuditRecorded]:
        found = await collect(js, subjects.audit("_", "security"), within_s=0.5)
        events = [wire.decode(m.data, AuditRecorded).data for m in found]
        return [e for e in events if e.action == "gateway.token.rejected"]

    before = len(await refusals())
    wrong = mint(api.tenant, "tasks:read", secret="another-secret-that-is-32-bytes-long!")
    for _ in range(30):
        answer = await api.client.get("/api/v1/tasks", headers={"Authorization": f"Bearer {wrong}"})
        assert answer.status_code == 401

    async def audited() -> list[AuditRecorded]:
        found = (await refusals())[before:]
        return found if sum(int(e.labels["count"]) for e in found) >= 30 else []

    records = await eventually(audited, "the refusals audited", 15)
    assert len(records) < 30  # one record per second, not one per refusal
    assert {e.actor for e in records} == {"127.0.0.1"}
    assert records[0].outcome == "denied"
