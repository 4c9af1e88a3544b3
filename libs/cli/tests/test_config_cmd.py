"""``zhongshu config check|push``: validate, then load into the bucket services watch."""

from __future__ import annotations

import asyncio
from pathlib import Path

from typer.testing import CliRunner

from zhongshu.cli.main import app
from zhongshu.contracts import envelope as wire
from zhongshu.contracts.events import AuditRecorded
from zhongshu.contracts.streams import AUDIT, CONFIG_KV
from zhongshu.devstack import NatsServer
from zhongshu.devstack.testing import provision_all
from zhongshu.runtime import bus
from zhongshu.runtime.liveconfig import CONFIG_KEY

runner = CliRunner()

CONFIG = """
tenants: {acme: {name: Acme}}
apps:
  acme-feishu:
    tenant: acme
    platform: feishu
    feishu: {app_id: cli_xxx, app_secret: "${FEISHU_APP_SECRET}"}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "zhongshu.yaml"
    path.write_text(text)
    return path


def test_check_accepts_a_valid_file_without_printing_secrets(tmp_path: Path) -> None:
    env = {"FEISHU_APP_SECRET": "feishu-secret-value", "COLUMNS": "200"}
    result = runner.invoke(
        app, ["config", "check", "--file", str(write(tmp_path, CONFIG))], env=env
    )
    assert result.exit_code == 0, result.output
    assert "1 app(s): acme-feishu (feishu, tenant acme)" in result.output
    assert "feishu-secret-value" not in result.output


def test_check_warns_that_an_app_with_an_empty_whitelist_is_open_to_everyone(
    tmp_path: Path,
) -> None:
    env = {"FEISHU_APP_SECRET": "feishu-secret-value", "COLUMNS": "400"}
    listed = CONFIG + "    access: {users: [ou_1]}\n"
    open_result = runner.invoke(
        app, ["config", "check", "--file", str(write(tmp_path, CONFIG))], env=env
    )
    assert open_result.exit_code == 0, open_result.output
    assert "apps.acme-feishu.access lists no users, chats or departments" in open_result.output
    listed_result = runner.invoke(
        app, ["config", "check", "--file", str(write(tmp_path, listed))], env=env
    )
    assert listed_result.exit_code == 0, listed_result.output
    assert "lists no users" not in listed_result.output


def test_check_names_the_missing_variable_and_exits_1(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["config", "check", "--file", str(write(tmp_path, CONFIG))],
        env={"FEISHU_APP_SECRET": None, "COLUMNS": "200"},
    )
    assert result.exit_code == 1
    assert "apps.acme-feishu.feishu.app_secret" in result.output
    assert "FEISHU_APP_SECRET is not set" in result.output


def test_push_stores_the_file_for_running_services(
    tmp_path: Path, private_nats_server: NatsServer
) -> None:
    asyncio.run(provision_all(private_nats_server.url))
    env = {
        "ZHONGSHU_NATS_URL": private_nats_server.url,
        "FEISHU_APP_SECRET": "feishu-secret-value",
        "COLUMNS": "200",
    }
    result = runner.invoke(app, ["config", "push", "--file", str(write(tmp_path, CONFIG))], env=env)
    assert result.exit_code == 0, result.output
    assert "revision 1" in result.output

    async def stored() -> bytes:
        client = await bus.connect(private_nats_server.url, name="test")
        try:
            entry = await (await bus.jetstream(client).key_value(CONFIG_KV.bucket)).get(CONFIG_KEY)
            return entry.value or b""
        finally:
            await client.close()

    assert asyncio.run(stored()) == CONFIG.encode()

    async def audited() -> AuditRecorded:
        client = await bus.connect(private_nats_server.url, name="test")
        try:
            msg = await bus.jetstream(client).get_last_msg(AUDIT.name, "audit._.config")
            return wire.decode(msg.data or b"", AuditRecorded).data
        finally:
            await client.close()

    event = asyncio.run(audited())
    assert (event.action, event.target, event.labels["revision"]) == (
        "config.pushed",
        "config",
        "1",
    )
    assert "@" in event.actor
