"""``zhongshu token create``: prints a token the gateway accepts (verified here with PyJWT, as
the gateway does), and refuses clearly when it cannot sign one."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import jwt
import pytest
from typer.testing import CliRunner

from zhongshu.cli.main import app
from zhongshu.contracts import envelope as wire
from zhongshu.contracts.events import AuditRecorded
from zhongshu.contracts.streams import AUDIT
from zhongshu.devstack import NatsServer
from zhongshu.devstack.testing import provision_all
from zhongshu.runtime import bus

runner = CliRunner()
SECRET = "a-gateway-secret-of-at-least-32-characters"


def create(*args: str, **env: str | None) -> tuple[int, str]:
    environment = {
        "ZHONGSHU_JWT_SECRET": SECRET,
        "ZHONGSHU_JWT_ISSUER": None,
        "ZHONGSHU_JWT_AUDIENCE": None,
        "COLUMNS": "200",
        **env,
    }
    result = runner.invoke(app, ["token", "create", *args], env=environment)
    return result.exit_code, result.output


def test_the_token_carries_tenant_scopes_and_lifetime_and_verifies_with_the_secret() -> None:
    code, output = create(
        "--tenant",
        "acme",
        "--scope",
        "tasks:read",
        "--scope",
        "tasks:write",
        "--ttl",
        "1h",
        "--subject",
        "erp",
    )
    assert code == 0, output
    token = output.strip()
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["tenant"] == "acme"
    assert claims["scope"] == "tasks:read tasks:write"
    assert claims["sub"] == "erp"
    assert claims["jti"]
    assert abs(claims["exp"] - (time.time() + 3600)) < 60
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_issuer_and_audience_follow_the_gateways_settings() -> None:
    code, output = create(
        "--tenant",
        "acme",
        "--scope",
        "admin",
        ZHONGSHU_JWT_ISSUER="https://hub.example",
        ZHONGSHU_JWT_AUDIENCE="zhongshu-api",
    )
    assert code == 0, output
    claims = jwt.decode(
        output.strip(),
        SECRET,
        algorithms=["HS256"],
        issuer="https://hub.example",
        audience="zhongshu-api",
    )
    assert claims["scope"] == "admin"


def test_without_the_secret_it_says_which_variable_to_set(tmp_path: Path) -> None:
    # A data dir with no generated secret (./data may hold one from a local `zhongshu up`).
    code, output = create(
        "--tenant",
        "acme",
        "--scope",
        "admin",
        "--data-dir",
        str(tmp_path),
        ZHONGSHU_JWT_SECRET=None,
    )
    assert code == 1
    assert "ZHONGSHU_JWT_SECRET is not set" in output
    assert "Traceback" not in output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--tenant", "Acme Corp", "--scope", "admin"], "--tenant"),
        (["--tenant", "acme", "--scope", "root"], "unknown scope 'root'"),
        (["--tenant", "acme", "--scope", "admin", "--ttl", "forever"], "--ttl"),
    ],
)
def test_bad_arguments_are_usage_errors(args: list[str], says: str) -> None:
    code, output = create(*args)
    assert code == 2
    assert says in output


def test_a_short_secret_is_refused() -> None:
    code, output = create("--tenant", "acme", "--scope", "admin", ZHONGSHU_JWT_SECRET="short")
    assert code == 1
    assert "shorter than 32" in output


def test_without_the_variable_the_secret_up_generated_signs_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zhongshu.cli import localsecrets

    monkeypatch.delenv("ZHONGSHU_JWT_SECRET", raising=False)
    values = localsecrets.ensure(tmp_path, {})
    assert set(values) == {"ZHONGSHU_JWT_SECRET", "ZHONGSHU_CALLBACK_KEY"}
    assert localsecrets.ensure(tmp_path, {}) == values  # kept: tokens survive restarts
    assert (localsecrets.secrets_dir(tmp_path) / "jwt_secret").stat().st_mode & 0o777 == 0o600
    result = CliRunner().invoke(
        app,
        [
            "token",
            "create",
            "--tenant",
            "acme",
            "--scope",
            "tasks:read",
            "--data-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    claims = jwt.decode(token, values["ZHONGSHU_JWT_SECRET"], algorithms=["HS256"])
    assert claims["tenant"] == "acme"
    assert values["ZHONGSHU_JWT_SECRET"] not in result.output


def test_a_token_issued_for_a_running_hub_is_in_its_audit_trail(
    private_nats_server: NatsServer,
) -> None:
    asyncio.run(provision_all(private_nats_server.url))
    code, output = create(
        "--tenant", "acme", "--scope", "admin", ZHONGSHU_NATS_URL=private_nats_server.url
    )
    assert code == 0, output
    jti = jwt.decode(output.strip(), SECRET, algorithms=["HS256"])["jti"]

    async def audited() -> AuditRecorded:
        client = await bus.connect(private_nats_server.url, name="test")
        try:
            msg = await bus.jetstream(client).get_last_msg(AUDIT.name, "audit.acme.token")
            return wire.decode(msg.data or b"", AuditRecorded).data
        finally:
            await client.close()

    event = asyncio.run(audited())
    assert (event.action, event.target, event.tenant) == ("token.issued", f"token:{jti}", "acme")
    assert event.labels["scope"] == "admin"
    assert output.strip() not in event.detail


def test_a_teams_api_key_is_long_lived_and_may_publish_its_events() -> None:
    code, output = create("--tenant", "acme", "--team", "billing")
    assert code == 0, output
    claims = jwt.decode(output.strip(), SECRET, algorithms=["HS256"])
    assert (claims["team"], claims["scope"], claims["sub"]) == (
        "billing",
        "events:publish",
        "team:billing",
    )
    assert claims["jti"]
    assert abs(claims["exp"] - (time.time() + 365 * 86_400)) < 60
    code, output = create("--tenant", "acme")
    assert code == 2
    assert "give --scope" in output


def test_revoke_stores_the_jti_until_the_token_expires_and_audits_it(
    private_nats_server: NatsServer,
) -> None:
    from zhongshu.contracts.grants import REVOKED_DECODER
    from zhongshu.contracts.streams import REVOKED_TOKENS_KV

    asyncio.run(provision_all(private_nats_server.url))
    env = {"ZHONGSHU_NATS_URL": private_nats_server.url}
    code, token = create("--tenant", "acme", "--scope", "tasks:read", **env)
    assert code == 0, token
    claims = jwt.decode(token.strip(), SECRET, algorithms=["HS256"])
    args = ["token", "revoke", "--token", token.strip(), "--reason", "leaked"]
    first = runner.invoke(app, args, env=env)
    assert first.exit_code == 0, first.output
    assert f"revoked {claims['jti']}" in first.output
    again = runner.invoke(app, ["token", "revoke", claims["jti"], "--tenant", "acme"], env=env)
    assert again.exit_code == 0, again.output
    assert "already revoked" in again.output

    async def stored() -> tuple[bytes, AuditRecorded]:
        client = await bus.connect(private_nats_server.url, name="test")
        try:
            js = bus.jetstream(client)
            entry = await (await js.key_value(REVOKED_TOKENS_KV.bucket)).get(claims["jti"])
            msg = await js.get_last_msg(AUDIT.name, "audit.acme.token")
            return entry.value or b"", wire.decode(msg.data or b"", AuditRecorded).data
        finally:
            await client.close()

    value, event = asyncio.run(stored())
    record = REVOKED_DECODER.decode(value)
    assert (record.jti, record.tenant, record.expires_at, record.reason) == (
        claims["jti"],
        "acme",
        claims["exp"],
        "leaked",
    )
    assert (event.action, event.target, event.detail) == (
        "token.revoked",
        f"token:{claims['jti']}",
        "leaked",
    )


def test_revoke_without_a_jti_is_a_usage_error() -> None:
    result = runner.invoke(app, ["token", "revoke", "--token", "not-a-jwt"])
    assert result.exit_code == 2
    assert "not a JWT" in result.output
