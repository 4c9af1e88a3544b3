"""``zhongshu provision`` against a real nats-server: idempotent, refusals explained."""

from __future__ import annotations

from typer.testing import CliRunner

from zhongshu.cli.main import app
from zhongshu.contracts.streams import KV_BUCKETS, STREAMS
from zhongshu.devstack import NatsServer

runner = CliRunner()


def test_provisioning_twice_changes_nothing_the_second_time(
    private_nats_server: NatsServer,
) -> None:
    env = {"ZHONGSHU_NATS_URL": private_nats_server.url, "COLUMNS": "200"}
    first = runner.invoke(app, ["provision"], env=env)
    assert first.exit_code == 0, first.output
    assert f"{len(STREAMS) + len(KV_BUCKETS)} created" in first.output

    second = runner.invoke(app, ["provision"], env=env)
    assert second.exit_code == 0, second.output
    assert f"{len(STREAMS) + len(KV_BUCKETS)} unchanged" in second.output
    assert "created" not in second.output
    assert "updated" not in second.output


def test_unreachable_server_is_one_error_line_without_secrets() -> None:
    env = {"ZHONGSHU_NATS_URL": "nats://user:hunter2@127.0.0.1:1", "COLUMNS": "200"}
    result = runner.invoke(app, ["status"], env=env)
    assert result.exit_code == 1
    assert "cannot reach NATS" in result.output
    assert "hunter2" not in result.output
    assert "Traceback" not in result.output
