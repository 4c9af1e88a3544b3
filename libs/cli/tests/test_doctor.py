"""``zhongshu doctor``: each thing a newcomer gets wrong is injected, and the check names it with
the fix; the platforms are the fakes (they check credentials and answer with the real error
codes), the clock is moved by injecting "now" or a server's ``Date``, never by waiting."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from email.utils import formatdate
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from typer.testing import CliRunner

from zhongshu.cli import doctor, runstate
from zhongshu.cli.doctor import Answer, Finding, Level, Options
from zhongshu.cli.main import app
from zhongshu.devstack.fakes.dingtalk_openapi import FakeDingTalkOpenAPI
from zhongshu.devstack.fakes.feishu_openapi import FakeFeishuOpenAPI
from zhongshu.devstack.fakes.llm import FakeLLM
from zhongshu.devstack.fakes.local_server import LocalServer

runner = CliRunner()

FEISHU_SECRET = "feishu-secret-do-not-print"
DINGTALK_SECRET = "dingtalk-secret-do-not-print"
MODEL_KEY = "sk-model-key-do-not-print"

APPS = """
tenants: {acme: {name: Acme}}
apps:
  acme-feishu:
    tenant: acme
    platform: feishu
    feishu: {app_id: cli_app, app_secret: "${FEISHU_APP_SECRET}"}
  acme-dingtalk:
    tenant: acme
    platform: dingtalk
    dingtalk: {app_key: ding-app, app_secret: "${DINGTALK_APP_SECRET}"}
"""


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock
    sock.close()


def options(
    tmp_path: Path,
    config: str | None = None,
    *,
    environ: dict[str, str] | None = None,
    offline: bool = False,
    python: tuple[int, ...] = (3, 11, 9),
) -> Options:
    """Everything injected: the environment (nothing of the host's leaks in; the HTTP port is a
    free one unless given), the data dir, the Python version."""
    path = tmp_path / "zhongshu.yaml"
    if config is not None:
        path.write_text(config)
    return Options(
        config_path=path,
        data_dir=tmp_path / "data",
        environ={"ZHONGSHU_HTTP_PORT": str(closed_port()), **(environ or {})},
        offline=offline,
        python=python,
        timeout_s=5.0,
    )


class ModelServer(LocalServer):
    """An OpenAI-compatible ``GET /v1/models`` that wants ``Authorization: Bearer <key>`` (the
    fake LLM's model list takes any key) and, like real providers, echoes a wrong key."""

    def __init__(self, key: str) -> None:
        async def models(request: Request) -> Response:
            given = request.headers.get("authorization", "").removeprefix("Bearer ")
            if given != key:
                error = {"message": f"Incorrect API key provided: {given}", "code": 401}
                return JSONResponse({"error": error}, status_code=401)
            return JSONResponse({"object": "list", "data": [{"id": "m", "object": "model"}]})

        super().__init__(Starlette(routes=[Route("/v1/models", models)]))


def by_check(findings: list[Finding]) -> dict[str, Finding]:
    return {f.check: f for f in findings}


def rendered(findings: list[Finding]) -> str:
    return "\n".join(doctor.line(f) for f in findings) + doctor.report_json(findings)


@pytest.fixture
async def feishu() -> AsyncIterator[FakeFeishuOpenAPI]:
    async with FakeFeishuOpenAPI(app_id="cli_app", app_secret=FEISHU_SECRET) as fake:
        yield fake


@pytest.fixture
async def dingtalk() -> AsyncIterator[FakeDingTalkOpenAPI]:
    async with FakeDingTalkOpenAPI(app_key="ding-app", app_secret=DINGTALK_SECRET) as fake:
        yield fake


def platform_env(
    feishu: FakeFeishuOpenAPI,
    dingtalk: FakeDingTalkOpenAPI,
    feishu_secret: str = FEISHU_SECRET,
    dingtalk_secret: str = DINGTALK_SECRET,
) -> dict[str, str]:
    return {
        "FEISHU_BASE_URL": feishu.base_url,
        "DINGTALK_API_URL": dingtalk.base_url,
        "FEISHU_APP_SECRET": feishu_secret,
        "DINGTALK_APP_SECRET": dingtalk_secret,
    }


# --- python -----------------------------------------------------------------------------------


async def test_python_older_than_3_11_fails_with_the_install_fix(tmp_path: Path) -> None:
    findings = await doctor.gather(options(tmp_path, offline=True, python=(3, 10, 14)))
    python = by_check(findings)["python"]
    assert python.level is Level.FAIL
    assert "3.10.14" in python.detail
    assert python.fix is not None
    assert "uv python install 3.11" in python.fix
    assert doctor.exit_code(findings) == 1


async def test_python_3_11_passes(tmp_path: Path) -> None:
    findings = await doctor.gather(options(tmp_path, offline=True, python=(3, 11, 0)))
    assert by_check(findings)["python"].level is Level.OK


# --- the HTTP port ----------------------------------------------------------------------------


async def test_port_in_use_fails_naming_the_port_and_the_variable(
    tmp_path: Path, listening: socket.socket
) -> None:
    port = listening.getsockname()[1]
    opts = options(tmp_path, offline=True, environ={"ZHONGSHU_HTTP_PORT": str(port)})
    finding = by_check(await doctor.gather(opts))["http port"]
    assert finding.level is Level.FAIL
    assert f"127.0.0.1:{port}" in finding.detail
    assert finding.fix is not None
    assert "ZHONGSHU_HTTP_PORT" in finding.fix


async def test_port_held_by_a_running_up_in_the_data_dir_is_said_not_failed(
    tmp_path: Path, listening: socket.socket
) -> None:
    port = listening.getsockname()[1]
    opts = options(tmp_path, offline=True, environ={"ZHONGSHU_HTTP_PORT": str(port)})
    runstate.write(
        runstate.services_path(opts.data_dir), runstate.RunState(supervisor_pid=os.getpid())
    )
    finding = by_check(await doctor.gather(opts))["http port"]
    assert finding.level is Level.OK
    assert f"zhongshu up is running in {opts.data_dir} (pid {os.getpid()})" in finding.detail


async def test_a_port_variable_that_is_not_a_number_fails(tmp_path: Path) -> None:
    opts = options(tmp_path, offline=True, environ={"ZHONGSHU_HTTP_PORT": "eighty"})
    finding = by_check(await doctor.gather(opts))["http port"]
    assert finding.level is Level.FAIL
    assert "'eighty' is not a port number" in finding.detail


# --- the configuration ------------------------------------------------------------------------


async def test_missing_config_is_a_warning_with_the_copy_fix(tmp_path: Path) -> None:
    findings = await doctor.gather(options(tmp_path, offline=True))
    finding = by_check(findings)["config"]
    assert finding.level is Level.WARN
    assert "does not exist" in finding.detail
    assert finding.fix is not None
    assert "config/zhongshu.example.yaml" in finding.fix
    assert doctor.exit_code(findings) == 0


def test_missing_default_config_says_copy_the_example_to_zhongshu_yaml() -> None:
    finding = doctor.missing_config_finding(Path("config/zhongshu.yaml"))
    assert finding.fix is not None
    assert "copy config/zhongshu.example.yaml to config/zhongshu.yaml" in finding.fix


async def test_config_error_names_the_field(tmp_path: Path) -> None:
    config = "apps:\n  bot:\n    tenant: acme\n    platform: wechat\n"
    findings = await doctor.gather(options(tmp_path, config, offline=True))
    failures = [f for f in findings if f.check == "config"]
    assert [f.level for f in failures] == [Level.FAIL]
    assert "apps.bot.platform" in failures[0].detail
    assert failures[0].fix is not None
    assert "zhongshu config check" in failures[0].fix


async def test_unset_variable_names_the_field_and_the_variable(tmp_path: Path) -> None:
    findings = await doctor.gather(options(tmp_path, APPS, offline=True))
    details = [f.detail for f in findings if f.check == "config" and f.level is Level.FAIL]
    assert any(
        "apps.acme-feishu.feishu.app_secret" in d and "FEISHU_APP_SECRET is not set" in d
        for d in details
    )
    assert any("DINGTALK_APP_SECRET is not set" in d for d in details)


async def test_config_that_is_not_yaml_fails_on_one_line(tmp_path: Path) -> None:
    findings = await doctor.gather(options(tmp_path, "apps: [unclosed\n", offline=True))
    failures = [f for f in findings if f.check == "config"]
    assert len(failures) == 1
    assert failures[0].level is Level.FAIL
    assert "not valid YAML" in failures[0].detail
    assert "\n" not in failures[0].detail


# --- the model endpoint -----------------------------------------------------------------------


async def test_model_endpoint_unreachable_fails(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}/v1"
    findings = await doctor.gather(options(tmp_path, environ={"MODEL_ENDPOINT": endpoint}))
    finding = by_check(findings)["model MODEL_ENDPOINT"]
    assert finding.level is Level.FAIL
    assert f"{endpoint} is unreachable" in finding.detail


async def test_model_endpoint_without_a_scheme_fails_asking_for_the_url(tmp_path: Path) -> None:
    findings = await doctor.gather(options(tmp_path, environ={"MODEL_ENDPOINT": "api.x.com/v1"}))
    finding = by_check(findings)["model MODEL_ENDPOINT"]
    assert finding.level is Level.FAIL
    assert "missing an 'http://' or 'https://'" in finding.detail
    assert finding.fix is not None
    assert "check the URL" in finding.fix


async def test_model_key_refused_fails_naming_where_the_key_is_set(tmp_path: Path) -> None:
    async with ModelServer(key="the-right-key") as llm:
        environ = {"MODEL_ENDPOINT": f"{llm.base_url}/v1", "MODEL_API_KEY": MODEL_KEY}
        findings = await doctor.gather(options(tmp_path, environ=environ))
    finding = by_check(findings)["model MODEL_ENDPOINT"]
    assert finding.level is Level.FAIL
    assert "refused the API key (HTTP 401)" in finding.detail
    assert finding.fix is not None
    assert "MODEL_API_KEY" in finding.fix
    assert MODEL_KEY not in rendered(findings)


async def test_model_provider_from_the_config_that_takes_its_key_passes(tmp_path: Path) -> None:
    async with ModelServer(key=MODEL_KEY) as llm:
        config = (
            "model:\n  providers: [{name: local, endpoint: "
            f'"{llm.base_url}/v1", api_key: "${{KEY}}", model: fake-model}}]\n'
        )
        findings = await doctor.gather(options(tmp_path, config, environ={"KEY": MODEL_KEY}))
    assert by_check(findings)["model local"].level is Level.OK


def test_model_404_warns_that_the_endpoint_should_be_the_base_url() -> None:
    finding = doctor.model_finding("m", "http://h/", Answer(status=404), "MODEL_API_KEY")
    assert finding.level is Level.WARN
    assert finding.fix is not None
    assert "/v1" in finding.fix


def test_no_model_configured_is_a_warning() -> None:
    assert doctor.NO_MODEL.level is Level.WARN


# --- platform credentials ---------------------------------------------------------------------


async def test_feishu_secret_refused_shows_the_platforms_code_and_the_field(
    tmp_path: Path, feishu: FakeFeishuOpenAPI, dingtalk: FakeDingTalkOpenAPI
) -> None:
    environ = platform_env(feishu, dingtalk, feishu_secret="wrong-feishu-secret")
    findings = await doctor.gather(options(tmp_path, APPS, environ=environ))
    finding = by_check(findings)["feishu acme-feishu"]
    assert finding.level is Level.FAIL
    assert "Feishu refused cli_app: code 10014 app secret invalid" in finding.detail
    assert finding.fix is not None
    assert "apps.acme-feishu.feishu.app_secret" in finding.fix
    assert by_check(findings)["dingtalk acme-dingtalk"].level is Level.OK
    assert doctor.exit_code(findings) == 1
    assert "wrong-feishu-secret" not in rendered(findings)


def test_feishu_unknown_app_id_says_the_app_id_is_wrong() -> None:
    answer = Answer(status=200, body={"code": 10003, "msg": "invalid param"})
    finding = doctor.feishu_finding("bot", "cli_x", answer)
    assert finding.level is Level.FAIL
    assert "code 10003" in finding.detail
    assert finding.fix is not None
    assert "apps.bot.feishu.app_id is wrong" in finding.fix


async def test_dingtalk_secret_refused_shows_the_platforms_code(
    tmp_path: Path, feishu: FakeFeishuOpenAPI, dingtalk: FakeDingTalkOpenAPI
) -> None:
    environ = platform_env(feishu, dingtalk, dingtalk_secret="wrong-dingtalk-secret")
    findings = await doctor.gather(options(tmp_path, APPS, environ=environ))
    finding = by_check(findings)["dingtalk acme-dingtalk"]
    assert finding.level is Level.FAIL
    assert "DingTalk refused ding-app: invalidClientIdOrSecret" in finding.detail
    assert finding.fix is not None
    assert "apps.acme-dingtalk.dingtalk" in finding.fix
    assert "wrong-dingtalk-secret" not in rendered(findings)


async def test_accepted_credentials_model_and_clock_all_pass(
    tmp_path: Path, feishu: FakeFeishuOpenAPI, dingtalk: FakeDingTalkOpenAPI
) -> None:
    async with FakeLLM(api_key=MODEL_KEY) as llm:
        environ = {
            **platform_env(feishu, dingtalk),
            "MODEL_ENDPOINT": f"{llm.base_url}/v1",
            "MODEL_API_KEY": MODEL_KEY,
        }
        findings = await doctor.gather(options(tmp_path, APPS, environ=environ))
    checks = by_check(findings)
    for name in (
        "feishu acme-feishu",
        "dingtalk acme-dingtalk",
        "model MODEL_ENDPOINT",
        "clock Feishu",
        "clock DingTalk",
        "config",
    ):
        assert checks[name].level is Level.OK, checks[name]
    assert doctor.exit_code(findings) == 0
    assert feishu.token_requests == 1
    assert dingtalk.token_requests == 1


async def test_unreachable_platform_fails_naming_its_address(
    tmp_path: Path, feishu: FakeFeishuOpenAPI, dingtalk: FakeDingTalkOpenAPI
) -> None:
    environ = {
        **platform_env(feishu, dingtalk),
        "FEISHU_BASE_URL": f"http://127.0.0.1:{closed_port()}",
    }
    findings = await doctor.gather(options(tmp_path, APPS, environ=environ))
    finding = by_check(findings)["feishu acme-feishu"]
    assert finding.level is Level.FAIL
    assert f"{environ['FEISHU_BASE_URL']} is unreachable" in finding.detail
    assert finding.fix is not None
    assert "FEISHU_BASE_URL" in finding.fix


async def test_no_secret_appears_in_the_output(
    tmp_path: Path, feishu: FakeFeishuOpenAPI, dingtalk: FakeDingTalkOpenAPI
) -> None:
    async with ModelServer(key="another-key") as llm:
        environ = {
            **platform_env(feishu, dingtalk),  # accepted
            "MODEL_ENDPOINT": f"http://user:url-password@127.0.0.1:{llm.port}/v1",
            "MODEL_API_KEY": MODEL_KEY,  # refused: the fake echoes it in its error body
        }
        findings = await doctor.gather(options(tmp_path, APPS, environ=environ))
    text = rendered(findings)
    for secret in (FEISHU_SECRET, DINGTALK_SECRET, MODEL_KEY, "url-password"):
        assert secret not in text
    assert by_check(findings)["model MODEL_ENDPOINT"].level is Level.FAIL


# --- the clock --------------------------------------------------------------------------------


async def serve_with_date(date: str, body: bytes) -> asyncio.Server:
    """A tiny HTTP server answering every request with this ``Date`` and JSON body."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (
                int(h.split(b":", 1)[1])
                for h in head.split(b"\r\n")
                if h.lower().startswith(b"content-length:")
            ),
            0,
        )
        await reader.readexactly(length)
        writer.write(
            b"HTTP/1.1 200 OK\r\nDate: " + date.encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
            + body
        )
        await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


async def test_clock_an_hour_off_from_feishu_warns_before_its_window(
    tmp_path: Path,
) -> None:
    token = json.dumps({"code": 0, "msg": "ok", "tenant_access_token": "t-1", "expire": 7200})
    server = await serve_with_date(formatdate(time.time() - 3600, usegmt=True), token.encode())
    async with server:
        port = server.sockets[0].getsockname()[1]
        environ = {"FEISHU_BASE_URL": f"http://127.0.0.1:{port}", "FEISHU_APP_SECRET": "s"}
        config = APPS.split("  acme-dingtalk:")[0]
        findings = await doctor.gather(options(tmp_path, config, environ=environ))
    clock = by_check(findings)["clock Feishu"]
    assert clock.level is Level.WARN
    assert "ahead of Feishu" in clock.detail
    assert clock.fix is not None
    assert "NTP" in clock.fix
    assert by_check(findings)["feishu acme-feishu"].level is Level.OK


async def test_clock_beyond_dingtalks_callback_window_fails(
    tmp_path: Path, feishu: FakeFeishuOpenAPI, dingtalk: FakeDingTalkOpenAPI
) -> None:
    two_hours_fast = dataclasses.replace(
        options(tmp_path, APPS, environ=platform_env(feishu, dingtalk)),
        now=lambda: time.time() + 2 * 3600,
    )
    findings = await doctor.gather(two_hours_fast)
    checks = by_check(findings)
    assert checks["clock DingTalk"].level is Level.FAIL
    assert "beyond the 3600 s window" in checks["clock DingTalk"].detail
    assert checks["clock Feishu"].level is Level.WARN  # Feishu's window is 8 h
    assert doctor.exit_code(findings) == 1


@pytest.mark.parametrize(
    ("skew", "level"),
    [
        (0.0, Level.OK),
        (-30.0, Level.OK),
        (31.0, Level.WARN),
        (-3600.0, Level.WARN),
        (3601.0, Level.FAIL),
        (None, Level.SKIP),
    ],
)
def test_clock_is_judged_against_the_warning_and_the_window(
    skew: float | None, level: Level
) -> None:
    assert doctor.clock_finding("DingTalk", skew, window_s=3600.0).level is level


def test_skew_is_the_servers_date_against_the_middle_of_the_exchange() -> None:
    sent = 1_700_000_000.0
    answer = Answer(
        status=200, date=formatdate(sent + 100, usegmt=True), sent_at=sent, received_at=sent + 2
    )
    assert doctor.skew_s(answer) == pytest.approx(99.0)
    assert doctor.skew_s(Answer(status=200, date="not a date")) is None


# --- output and the command -------------------------------------------------------------------


def test_a_line_carries_the_marker_the_check_the_finding_and_the_fix() -> None:
    assert doctor.line(Finding("python", Level.OK, "3.11.9"), width=6) == "ok    python  3.11.9"
    failed = doctor.line(Finding("config", Level.FAIL, "bad", "do this"), width=6)
    assert failed == "FAIL  config  bad → fix: do this"


def test_exit_code_is_1_only_when_a_check_fails() -> None:
    warn = Finding("c", Level.WARN, "w", "f")
    assert doctor.exit_code([warn, Finding("d", Level.SKIP, "s")]) == 0
    assert doctor.exit_code([warn, Finding("e", Level.FAIL, "x")]) == 1


async def test_offline_asks_no_platform(
    tmp_path: Path, feishu: FakeFeishuOpenAPI, dingtalk: FakeDingTalkOpenAPI
) -> None:
    opts = options(tmp_path, APPS, offline=True, environ=platform_env(feishu, dingtalk))
    findings = await doctor.gather(opts)
    assert feishu.token_requests == 0
    assert dingtalk.token_requests == 0
    assert {f.level for f in findings if f.check in ("model", "platforms", "clock")} == {Level.SKIP}


def test_command_offline_prints_one_line_per_check_and_exits_0(tmp_path: Path) -> None:
    env = {
        "ZHONGSHU_CONFIG": str(tmp_path / "missing.yaml"),
        "ZHONGSHU_HTTP_PORT": str(closed_port()),
        "COLUMNS": "300",
    }
    result = runner.invoke(app, ["doctor", "--offline", "--data-dir", str(tmp_path)], env=env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("ok    python")
    assert any(line.startswith("warn  config") and "→ fix:" in line for line in lines)


def test_command_json_and_exit_1_when_the_port_is_taken(
    tmp_path: Path, listening: socket.socket
) -> None:
    env = {
        "ZHONGSHU_CONFIG": str(tmp_path / "missing.yaml"),
        "ZHONGSHU_HTTP_PORT": str(listening.getsockname()[1]),
    }
    result = runner.invoke(
        app, ["doctor", "--offline", "--json", "--data-dir", str(tmp_path)], env=env
    )
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    assert report["ok"] is False
    assert {c["check"]: c["status"] for c in report["checks"]}["http port"] == "fail"
