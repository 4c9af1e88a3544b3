"""zhongshu.yaml: validated at start, errors name the field, secrets resolved and never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from zhongshu.runtime.errors import ConfigurationError
from zhongshu.runtime.hubconfig import HubConfig, load_config, parse_config

EXAMPLE = """
tenants:
  acme: {name: Acme}
apps:
  acme-feishu:
    tenant: acme
    platform: feishu
    feishu: {app_id: cli_xxx, app_secret: "${FEISHU_APP_SECRET}", encrypt_key: "${file:KEYFILE}",
             verification_token: "${FEISHU_VERIFICATION_TOKEN}", receive: [webhook]}
    access: {users: [], chats: [], departments: [], admins: [ou_xxx], deny: []}
    group: {require_mention: true, prefixes: ["/"]}
    rate_limit: {per_user: 10/min, per_chat: 60/min}
    persona: "You are the Acme operations assistant."
  acme-dingtalk:
    tenant: acme
    platform: dingtalk
    dingtalk: {app_key: ding_xxx, app_secret: "${DINGTALK_APP_SECRET}", robot_code: ding_xxx,
               receive: [http]}
model:
  providers: [{name: deepseek, endpoint: "http://127.0.0.1:1/v1", model: deepseek-chat}]
  qps: 10
"""

ENV = {
    "FEISHU_APP_SECRET": "feishu-secret-value",
    "FEISHU_VERIFICATION_TOKEN": "vtoken",
    "DINGTALK_APP_SECRET": "dingtalk-secret-value",
}


def example(tmp_path: Path) -> str:
    key = tmp_path / "encrypt_key"
    key.write_text("test key\n")
    return EXAMPLE.replace("KEYFILE", str(key))


def test_the_documented_example_loads_with_secrets_resolved(tmp_path: Path) -> None:
    config = parse_config(example(tmp_path), environ=ENV)
    feishu = config.apps["acme-feishu"].feishu
    assert feishu is not None
    assert feishu.app_secret.get_secret_value() == "feishu-secret-value"
    assert feishu.encrypt_key is not None
    assert feishu.encrypt_key.get_secret_value() == "test key"
    limits = config.apps["acme-feishu"].rate_limit
    assert limits.per_user is not None
    assert (limits.per_user.count, limits.per_user.period_s) == (10, 60)
    assert "feishu-secret-value" not in repr(config)


def test_a_missing_secret_variable_is_named_with_its_field(tmp_path: Path) -> None:
    env = {k: v for k, v in ENV.items() if k != "DINGTALK_APP_SECRET"}
    with pytest.raises(ConfigurationError, match=r"apps\.acme-dingtalk\.dingtalk\.app_secret"):
        parse_config(example(tmp_path), environ=env)


def test_an_invalid_field_is_named_and_secrets_are_not_echoed(tmp_path: Path) -> None:
    bad = example(tmp_path).replace("per_user: 10/min", "per_user: often")
    with pytest.raises(ConfigurationError) as raised:
        parse_config(bad, environ=ENV)
    assert "apps.acme-feishu.rate_limit.per_user" in str(raised.value)
    assert "feishu-secret-value" not in str(raised.value)


def test_credentials_must_match_the_platform() -> None:
    text = "apps:\n  x:\n    tenant: t\n    platform: feishu\n"
    with pytest.raises(ConfigurationError, match="'feishu' section is missing"):
        parse_config(text, environ={})


def test_an_app_of_an_unknown_tenant_is_rejected(tmp_path: Path) -> None:
    bad = example(tmp_path).replace(
        "tenant: acme\n    platform: dingtalk", "tenant: other\n    platform: dingtalk"
    )
    with pytest.raises(ConfigurationError, match="unknown tenant 'other'"):
        parse_config(bad, environ=ENV)


def test_no_file_means_no_apps_yet(tmp_path: Path) -> None:
    assert load_config(tmp_path / "absent.yaml") == HubConfig()


def test_malformed_yaml_is_reported_with_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "zhongshu.yaml"
    path.write_text("apps: [unclosed")
    with pytest.raises(ConfigurationError, match=r"zhongshu\.yaml: not valid YAML"):
        load_config(path)


def test_the_shipped_example_configuration_is_valid() -> None:
    example_file = Path(__file__).resolve().parents[3] / "config" / "zhongshu.example.yaml"
    variables = [
        "FEISHU_APP_SECRET",
        "FEISHU_ENCRYPT_KEY",
        "FEISHU_VERIFICATION_TOKEN",
        "DINGTALK_APP_SECRET",
        "DINGTALK_ALERT_WEBHOOK",
        "DINGTALK_ALERT_SECRET",
        "MODEL_ENDPOINT",
        "MODEL_API_KEY",
    ]
    config = load_config(example_file, environ={name: "x" for name in variables})
    assert set(config.apps) == {"acme-feishu", "acme-dingtalk"}


def test_an_mcp_server_needs_a_command_or_a_url() -> None:
    text = "agent:\n  tools:\n    mcp:\n      files: {args: [x]}\n"
    with pytest.raises(ConfigurationError, match="exactly one of `command`"):
        parse_config(text, environ={})


def test_an_mcp_servers_environment_secrets_are_resolved_and_hidden() -> None:
    text = "agent:\n  tools:\n    mcp:\n      s: {command: srv, env: {TOKEN: '${T}'}}\n"
    config = parse_config(text, environ={"T": "tok-123"})
    server = config.agent.tools.mcp["s"]
    assert server.env["TOKEN"].get_secret_value() == "tok-123"
    assert "tok-123" not in repr(config)


def test_numeric_department_ids_are_read_as_strings() -> None:
    text = (
        "apps:\n  d:\n    tenant: t\n    platform: dingtalk\n"
        "    dingtalk: {app_key: k, app_secret: s}\n    access: {departments: [42, 'ops']}\n"
    )
    assert parse_config(text, environ={}).apps["d"].access.departments == ("42", "ops")


def test_internal_allow_lists_take_hosts_addresses_and_networks_and_refuse_typos() -> None:
    config = parse_config(
        "callbacks: {allow_internal: [10.20.0.0/16, hooks.internal, 127.0.0.1, '::1']}\n"
        "agent: {tools: {fetch_allow_internal: ['fd00::/8', wiki.corp]}}\n",
        environ={},
    )
    assert config.callbacks.allow_internal == ("10.20.0.0/16", "hooks.internal", "127.0.0.1", "::1")
    assert config.agent.tools.fetch_allow_internal == ("fd00::/8", "wiki.corp")
    for typo in ("10.0.0.0/33", "http://hooks.internal", "hooks internal"):
        with pytest.raises(ConfigurationError, match="not a host name"):
            parse_config(f"callbacks: {{allow_internal: ['{typo}']}}\n", environ={})
