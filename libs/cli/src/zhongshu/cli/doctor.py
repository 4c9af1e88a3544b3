"""``zhongshu doctor``: what a newcomer gets wrong, one line per check with the fix.

Local checks (Python, the front door's port, the configuration) always run; the network checks
(the model endpoints, every app's platform credentials and the clock against the platforms'
``Date`` headers) run concurrently, each with a short timeout, unless ``--offline``.

The pure parts (what a finding is, how it is judged and printed) are separate from the probing,
so they are tested without a network. A secret is never printed: the model's key and the apps'
secrets are sent, never shown; URLs go through ``redact_url``."""

from __future__ import annotations

import asyncio
import enum
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.markup import escape

from zhongshu.cli import edge, runstate
from zhongshu.cli.console import CliError, console
from zhongshu.platforms import Credentials, DingTalkClient, FeishuClient, PlatformURLs
from zhongshu.platforms.calls import exchange, json_object
from zhongshu.platforms.results import Token, TokenResult, Unreachable
from zhongshu.platforms.settings import DINGTALK_API_ENV, FEISHU_BASE_ENV
from zhongshu.runtime.bus import redact_url
from zhongshu.runtime.errors import ConfigurationError
from zhongshu.runtime.hubconfig import DEFAULT_PATH, App, HubConfig, parse_config

MIN_PYTHON = (3, 11)
DEFAULT_TIMEOUT_S = 5.0
EXAMPLE_CONFIG = Path("config/zhongshu.example.yaml")

# The platforms' base URLs are the services' (PlatformURLs: FEISHU_BASE_URL, DINGTALK_API_URL,
# read from the environment the doctor was given); the tokens are asked of the same clients.

# The clock: a signed callback is refused when its timestamp is further from our clock than the
# ingress's window. DingTalk's robot callbacks: 1 hour (ingress-dingtalk `callback_max_skew_s`,
# protocols §2.1). Feishu documents none; ingress-feishu accepts 8 h (`max_timestamp_skew_s`,
# the span of the platform's retries). Warn long before either.
CLOCK_WARN_S = 30.0
FEISHU_WINDOW_ENV = "ZHONGSHU_MAX_TIMESTAMP_SKEW_S"
FEISHU_WINDOW_S = 8 * 3600.0
DINGTALK_WINDOW_ENV = "ZHONGSHU_CALLBACK_MAX_SKEW_S"
DINGTALK_WINDOW_S = 3600.0

# The agent's model variables (services/agent settings), with or without the ZHONGSHU_ prefix.
MODEL_ENDPOINT_ENVS = ("MODEL_ENDPOINT", "ZHONGSHU_MODEL_ENDPOINT")
MODEL_API_KEY_ENVS = ("MODEL_API_KEY", "ZHONGSHU_MODEL_API_KEY")

# Feishu's answers to tenant_access_token/internal for wrong credentials.
FEISHU_BAD_APP_ID = "10003"
FEISHU_BAD_SECRET = "10014"
CLOCK_FIX = "sync the system clock with NTP (e.g. `sudo timedatectl set-ntp true`, or chrony/ntpd)"


class Level(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"

    @property
    def marker(self) -> str:
        return "FAIL" if self is Level.FAIL else self.value


_STYLE = {Level.OK: "green", Level.WARN: "yellow", Level.FAIL: "bold red", Level.SKIP: "dim"}


@dataclass(frozen=True)
class Finding:
    check: str
    level: Level
    detail: str
    fix: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "status": self.level.value,
            "detail": self.detail,
            "fix": self.fix,
        }


# --- the pure parts: turning what was found into findings, and findings into output ---------


def line(finding: Finding, width: int = 16) -> str:
    """``ok    python          3.11.9``; when not ok, ``→ fix: …`` follows on the same line."""
    text = f"{finding.level.marker:<5} {finding.check:<{width}}  {finding.detail}"
    if finding.fix and finding.level in (Level.WARN, Level.FAIL):
        text += f" → fix: {finding.fix}"
    return text


def exit_code(findings: Sequence[Finding]) -> int:
    return 1 if any(f.level is Level.FAIL for f in findings) else 0


def report_json(findings: Sequence[Finding]) -> str:
    return json.dumps(
        {"ok": exit_code(findings) == 0, "checks": [f.to_json() for f in findings]},
        ensure_ascii=False,
        indent=2,
    )


def python_finding(version: Sequence[int]) -> Finding:
    shown = ".".join(str(v) for v in version[:3])
    if tuple(version[:2]) >= MIN_PYTHON:
        return Finding("python", Level.OK, f"{shown} ({sys.executable})")
    return Finding(
        "python",
        Level.FAIL,
        f"{shown}: zhongshu needs Python {'.'.join(map(str, MIN_PYTHON))} or newer",
        "`uv python install 3.11`, then `uv sync` (uv picks the version from pyproject.toml)",
    )


def parse_port(raw: str | None) -> int | None:
    """The HTTP port `zhongshu up` would use, or None when the variable is not a port."""
    value = str(edge.DEFAULT_PORT) if raw is None else raw
    if not value.isdigit() or not 0 < int(value) < 65536:
        return None
    return int(value)


def port_finding(
    port: int | None, raw: str | None, bind_error: str | None, up_pid: int | None, data_dir: Path
) -> Finding:
    """`bind_error`: why the port could not be bound (None: it could). `up_pid`: the pid of a
    ``zhongshu up`` running in `data_dir`, if any."""
    if port is None:
        return Finding(
            "http port",
            Level.FAIL,
            f"{edge.HTTP_PORT_ENV}={raw!r} is not a port number",
            f"set {edge.HTTP_PORT_ENV} to a free port between 1 and 65535, or unset it (default "
            f"{edge.DEFAULT_PORT})",
        )
    where = f"127.0.0.1:{port}"
    if bind_error is None:
        return Finding("http port", Level.OK, f"{where} is free")
    if up_pid is not None:
        return Finding(
            "http port",
            Level.OK,
            f"{where} is in use: zhongshu up is running in {data_dir} (pid {up_pid})",
        )
    return Finding(
        "http port",
        Level.FAIL,
        f"{where} is unusable ({bind_error}): zhongshu up could not open its HTTP front door",
        f"stop what listens there (`ss -ltnp 'sport = :{port}'` shows it), or set "
        f"{edge.HTTP_PORT_ENV} to a free port",
    )


def missing_config_finding(path: Path) -> Finding:
    if path == DEFAULT_PATH:
        fix = (
            f"copy {EXAMPLE_CONFIG} to {DEFAULT_PATH} and set the ${{VARS}} it names "
            "(`zhongshu config check` validates it)"
        )
    else:
        fix = (
            f"ZHONGSHU_CONFIG or --file names {path}, which does not exist: fix the path, or copy "
            f"{EXAMPLE_CONFIG} there"
        )
    return Finding("config", Level.WARN, f"{path} does not exist: no apps configured", fix)


def config_findings(
    path: Path, text: str | None, environ: Mapping[str, str]
) -> tuple[list[Finding], HubConfig | None]:
    """Validate as ``zhongshu config check`` does (`parse_config`), listing every unresolvable
    ``${VAR}`` rather than only the first. Returns the findings and the configuration when it
    could be read (references that are not set are then empty), for the network checks."""
    if text is None:
        return [missing_config_finding(path)], None
    missing: list[str] = []
    try:
        config = parse_config(text, source=str(path), environ=dict(environ), missing=missing)
    except ConfigurationError as exc:
        headline, _, rest = str(exc).partition("\n")
        if headline.endswith(" is invalid:"):  # one "  field.path: message" line per problem
            problems = [f"{path}: {p.strip()}" for p in rest.splitlines() if p.strip()]
        else:  # not YAML, not a mapping: one line
            problems = [" ".join(part.strip() for part in str(exc).splitlines())]
        findings = [
            Finding(
                "config",
                Level.FAIL,
                problem,
                f"correct that field in {path} (compare {EXAMPLE_CONFIG}), then "
                "`zhongshu config check`",
            )
            for problem in problems
        ]
        return findings + [_missing_finding(path, m) for m in missing], None
    if missing:
        return [_missing_finding(path, m) for m in missing], config
    apps = ", ".join(f"{name} ({app.platform})" for name, app in config.apps.items())
    detail = f"{path} is valid: {len(config.apps)} app(s)" + (f": {apps}" if apps else "")
    return [Finding("config", Level.OK, detail)], config


def _missing_finding(path: Path, problem: str) -> Finding:
    # "<field>: environment variable X is not set" or "<field>: cannot read /p: reason"
    variable = problem.rsplit("environment variable ", 1)[-1].removesuffix(" is not set")
    if "environment variable " in problem:
        fix = f"export {variable}=… (or write ${{file:/path}} in {path} to read it from a file)"
    else:
        fix = f"make the file readable, or change the reference in {path}"
    return Finding("config", Level.FAIL, f"{path}: {problem}", fix)


@dataclass(frozen=True)
class Answer:
    """What a probe got: an HTTP status (and JSON body, Date header) or the error that stopped
    it. `sent_at`/`received_at` are local wall-clock seconds around the exchange. `accepted`:
    the platform issued a token (the body then holds no token)."""

    status: int | None = None
    body: dict[str, Any] = field(default_factory=dict)
    date: str | None = None
    error: str | None = None
    where: str = ""
    """scheme://host[:port] asked (no credentials, no path)."""
    sent_at: float = 0.0
    received_at: float = 0.0
    accepted: bool = False


def model_finding(name: str, endpoint: str, answer: Answer, key_source: str) -> Finding:
    check = f"model {name}"
    shown = redact_url(endpoint)
    if answer.status is None:
        return Finding(
            check,
            Level.FAIL,
            f"{shown} is unreachable: {answer.error}",
            "check the URL (an OpenAI-compatible base such as https://api.deepseek.com/v1), "
            "the network or proxy, and that the server runs",
        )
    if answer.status in (401, 403):
        return Finding(
            check,
            Level.FAIL,
            f"{shown} refused the API key (HTTP {answer.status})",
            f"set a valid key in {key_source}",
        )
    if answer.status == 404:
        return Finding(
            check,
            Level.WARN,
            f"{shown} answered 404 for /models",
            "the endpoint should be the API's base URL, usually ending in /v1",
        )
    return Finding(check, Level.OK, f"{shown} answered (HTTP {answer.status})")


def feishu_finding(app_name: str, app_id: str, answer: Answer) -> Finding:
    check = f"feishu {app_name}"
    if answer.status is None:
        return _platform_unreachable(check, FEISHU_BASE_ENV, answer)
    code, msg = answer.body.get("code"), answer.body.get("msg", "")
    if answer.accepted:
        return Finding(check, Level.OK, f"credentials of {app_id} accepted")
    field_path = f"apps.{app_name}.feishu"
    if str(code) == FEISHU_BAD_APP_ID:
        fix = f"{field_path}.app_id is wrong: copy the App ID from the Feishu developer console"
    elif str(code) == FEISHU_BAD_SECRET:
        fix = (
            f"{field_path}.app_secret is wrong: copy the App Secret of {app_id} from the Feishu "
            "developer console (Credentials & Basic Info)"
        )
    else:
        fix = f"check {field_path}.app_id and app_secret in the Feishu developer console"
    if code is None:
        detail = f"unexpected answer (HTTP {answer.status}) for {app_id}"
    else:
        detail = f"Feishu refused {app_id}: code {code} {msg}".rstrip()
    return Finding(check, Level.FAIL, detail, fix)


def dingtalk_finding(app_name: str, app_key: str, answer: Answer) -> Finding:
    check = f"dingtalk {app_name}"
    if answer.status is None:
        return _platform_unreachable(check, DINGTALK_API_ENV, answer)
    if answer.accepted:
        return Finding(check, Level.OK, f"credentials of {app_key} accepted")
    code, message = answer.body.get("code"), answer.body.get("message", "")
    if code is None:
        detail = f"unexpected answer (HTTP {answer.status}) for {app_key}"
    else:
        detail = f"DingTalk refused {app_key}: {code} {message}".rstrip()
    return Finding(
        check,
        Level.FAIL,
        detail,
        f"apps.{app_name}.dingtalk.app_key/app_secret must be the app's Client ID and Client "
        "Secret (DingTalk developer console, Credentials & Basic Info)",
    )


def _platform_unreachable(check: str, env: str, answer: Answer) -> Finding:
    return Finding(
        check,
        Level.FAIL,
        f"{answer.where or 'the platform'} is unreachable: {answer.error}",
        f"check the network or proxy (HTTPS_PROXY), or {env} if set",
    )


def skew_s(answer: Answer) -> float | None:
    """How far the server's clock (its ``Date`` header) is ahead of ours, or None without one.
    ``Date`` has whole seconds: the estimate is good to about a second plus the round trip."""
    if answer.date is None:
        return None
    try:
        server = parsedate_to_datetime(answer.date).timestamp()
    except (TypeError, ValueError):
        return None
    return server - (answer.sent_at + answer.received_at) / 2


def clock_finding(
    platform: str, skew: float | None, window_s: float, warn_s: float = CLOCK_WARN_S
) -> Finding:
    check = f"clock {platform}"
    if skew is None:
        return Finding(check, Level.SKIP, f"{platform} sent no usable Date header")
    direction = "behind" if skew > 0 else "ahead of"
    detail = f"this machine is {abs(skew):.0f} s {direction} {platform}"
    if abs(skew) <= warn_s:
        return Finding(check, Level.OK, f"within {warn_s:.0f} s of {platform}")
    if abs(skew) <= window_s:
        return Finding(
            check,
            Level.WARN,
            f"{detail} (signed callbacks are refused beyond {window_s:.0f} s)",
            CLOCK_FIX,
        )
    return Finding(
        check,
        Level.FAIL,
        f"{detail}: beyond the {window_s:.0f} s window, its signed callbacks are refused",
        CLOCK_FIX,
    )


def _window(environ: Mapping[str, str], env: str, default: float) -> float:
    try:
        value = float(environ.get(env, default))
    except ValueError:
        return default
    return value if value > 0 else default


# --- the probes ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Options:
    config_path: Path
    data_dir: Path = runstate.DEFAULT_DATA_DIR
    offline: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    python: tuple[int, ...] = tuple(sys.version_info[:3])
    now: Callable[[], float] = time.time


def bind_error(port: int) -> str | None:
    """Bind the port as `zhongshu up`'s front door does; the reason it failed, or None."""
    try:
        edge.check_port(port)
    except CliError as exc:
        reason = str(exc)
        return reason[reason.find("(") + 1 : reason.find(")")] if "(" in reason else reason
    return None


def running_up(data_dir: Path) -> int | None:
    state = runstate.read(runstate.services_path(data_dir))
    if state is not None and runstate.pid_alive(state.supervisor_pid):
        return state.supervisor_pid
    return None


def local_findings(options: Options) -> tuple[list[Finding], HubConfig | None]:
    findings = [python_finding(options.python)]
    raw = options.environ.get(edge.HTTP_PORT_ENV)
    port = parse_port(raw)
    error = bind_error(port) if port is not None else None
    up_pid = running_up(options.data_dir) if error is not None else None
    findings.append(port_finding(port, raw, error, up_pid, options.data_dir))
    try:
        text: str | None = options.config_path.read_text()
    except FileNotFoundError:
        text = None
    except OSError as exc:
        findings.append(
            Finding(
                "config",
                Level.FAIL,
                f"cannot read {options.config_path}: {exc.strerror}",
                "make the file readable by this user",
            )
        )
        return findings, None
    config_part, config = config_findings(options.config_path, text, options.environ)
    return findings + config_part, config


async def probe(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    now: Callable[[], float],
    *,
    headers: Mapping[str, str] | None = None,
    json_body: dict[str, Any] | None = None,
) -> Answer:
    where = _where(url)
    if where is None:
        return Answer(error="not a valid URL")
    sent_at = now()
    # A failure is the exception's text, never the request (it may carry a secret).
    response = await exchange(client, method, url, headers=headers, json=json_body)
    if not isinstance(response, httpx.Response):
        return Answer(error=response.reason, where=where)
    return Answer(
        status=response.status_code,
        body=json_object(response),
        date=response.headers.get("date"),
        where=where,
        sent_at=sent_at,
        received_at=now(),
    )


def _where(url: str) -> str | None:
    """scheme://host[:port] of ``url``, or None when it is not a URL."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return None
    return f"{parsed.scheme}://{parsed.host}" + (f":{parsed.port}" if parsed.port else "")


async def ask_token(
    request: Awaitable[TokenResult], base_url: str, text_key: str, now: Callable[[], float]
) -> Answer:
    """A platform client's fresh token request, as an Answer: its status, the platform's code
    and message (under ``text_key``, as the platform names it) and ``Date``; never the token."""
    where = _where(base_url) or ""
    sent_at = now()
    result = await request
    received_at = now()
    if isinstance(result, Unreachable):
        return Answer(error=result.reason, where=where)
    answer = Answer(where=where, date=result.date, sent_at=sent_at, received_at=received_at)
    if isinstance(result, Token):
        return replace(answer, status=200, accepted=True)
    body = {"code": result.code, text_key: result.message}
    return replace(answer, status=result.status, body=body)


@dataclass(frozen=True)
class ModelTarget:
    name: str
    endpoint: str
    api_key: str | None
    key_source: str


def model_targets(config: HubConfig | None, environ: Mapping[str, str]) -> list[ModelTarget]:
    """The endpoints the agent would call: MODEL_ENDPOINT first, then `model.providers` (a
    provider whose `${MODEL_ENDPOINT}` is empty is "not configured", as for the agent)."""
    targets: list[ModelTarget] = []
    endpoint = next((environ[e] for e in MODEL_ENDPOINT_ENVS if environ.get(e)), None)
    if endpoint:
        key_env = next((e for e in MODEL_API_KEY_ENVS if environ.get(e)), None)
        targets.append(
            ModelTarget(
                "MODEL_ENDPOINT",
                endpoint,
                environ[key_env] if key_env else None,
                key_env or MODEL_API_KEY_ENVS[0],
            )
        )
    for provider in config.model.providers if config else ():
        if not provider.endpoint.strip():
            continue
        key = provider.api_key.get_secret_value() if provider.api_key else None
        target = ModelTarget(
            provider.name,
            provider.endpoint,
            key or None,
            f"model.providers ({provider.name}).api_key",
        )
        if not any(t.endpoint == target.endpoint and t.api_key == target.api_key for t in targets):
            targets.append(target)
    return targets


NO_MODEL = Finding(
    "model",
    Level.WARN,
    "no model endpoint configured: the agent cannot answer",
    "set MODEL_ENDPOINT (and MODEL_API_KEY), or `model.providers` in zhongshu.yaml, or run "
    "`zhongshu up --local-model PATH.gguf`",
)


async def check_model(
    client: httpx.AsyncClient, target: ModelTarget, now: Callable[[], float]
) -> Finding:
    headers = {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}
    url = target.endpoint.rstrip("/") + "/models"
    answer = await probe(client, "GET", url, now, headers=headers)
    return model_finding(target.name, target.endpoint, answer, target.key_source)


async def check_app(
    client: httpx.AsyncClient,
    name: str,
    app: App,
    environ: Mapping[str, str],
    now: Callable[[], float],
) -> tuple[Finding, Answer | None]:
    urls = PlatformURLs.from_environ(environ)
    if app.feishu is not None:
        secret = app.feishu.app_secret.get_secret_value()
        if not secret:
            return _secret_unset(f"feishu {name}", f"apps.{name}.feishu.app_secret"), None
        feishu = FeishuClient(client, base_url=urls.feishu_base_url)
        request = feishu.request_token(Credentials(app.feishu.app_id, secret))
        answer = await ask_token(request, feishu.base_url, "msg", now)
        return feishu_finding(name, app.feishu.app_id, answer), answer
    if app.dingtalk is not None:
        secret = app.dingtalk.app_secret.get_secret_value()
        if not secret:
            return _secret_unset(f"dingtalk {name}", f"apps.{name}.dingtalk.app_secret"), None
        dingtalk = DingTalkClient(client, api_url=urls.dingtalk_api_url)
        request = dingtalk.request_token(Credentials(app.dingtalk.app_key, secret))
        answer = await ask_token(request, dingtalk.api_url, "message", now)
        return dingtalk_finding(name, app.dingtalk.app_key, answer), answer
    raise AssertionError(f"app {name} has no platform section")  # pragma: no cover - validated


def _secret_unset(check: str, field_path: str) -> Finding:
    return Finding(check, Level.SKIP, f"not checked: {field_path} is not set (see config)")


async def network_findings(options: Options, config: HubConfig | None) -> list[Finding]:
    apps = list(config.apps.items()) if config else []
    targets = model_targets(config, options.environ)
    timeout = httpx.Timeout(options.timeout_s)
    async with httpx.AsyncClient(timeout=timeout) as client:
        models, platform = await asyncio.gather(
            asyncio.gather(*(check_model(client, t, options.now) for t in targets)),
            asyncio.gather(
                *(check_app(client, n, a, options.environ, options.now) for n, a in apps)
            ),
        )
    findings = list(models) if targets else [NO_MODEL]
    findings += [finding for finding, _ in platform]
    windows = {
        "feishu": _window(options.environ, FEISHU_WINDOW_ENV, FEISHU_WINDOW_S),
        "dingtalk": _window(options.environ, DINGTALK_WINDOW_ENV, DINGTALK_WINDOW_S),
    }
    for kind, label in (("feishu", "Feishu"), ("dingtalk", "DingTalk")):
        answers = [
            answer
            for (_, app), (_, answer) in zip(apps, platform, strict=True)
            if app.platform == kind and answer is not None and answer.status is not None
        ]
        if answers:
            skew = next((s for s in map(skew_s, answers) if s is not None), None)
            findings.append(clock_finding(label, skew, windows[kind]))
    if not any(f.check.startswith("clock") for f in findings):
        why = "no platform answered" if apps else "no apps configured"
        findings.append(Finding("clock", Level.SKIP, f"not checked: {why}"))
    return findings


OFFLINE = [
    Finding("model", Level.SKIP, "not checked (--offline)"),
    Finding("platforms", Level.SKIP, "apps' credentials not checked (--offline)"),
    Finding("clock", Level.SKIP, "not checked (--offline)"),
]


async def gather(options: Options) -> list[Finding]:
    findings, config = local_findings(options)
    if options.offline:
        return findings + OFFLINE
    return findings + await network_findings(options, config)


def print_findings(findings: Sequence[Finding]) -> None:
    width = max((len(f.check) for f in findings), default=0)
    for finding in findings:
        text = escape(line(finding, width))
        style = _STYLE[finding.level]
        marker = finding.level.marker
        console.print(f"[{style}]{marker}[/]{text[len(marker) :]}", soft_wrap=True)
    failed = sum(f.level is Level.FAIL for f in findings)
    warned = sum(f.level is Level.WARN for f in findings)
    if failed or warned:
        console.print(f"{failed} failed, {warned} warning(s)")
    else:
        console.print("[green]all good[/]")


def run(options: Options, *, as_json: bool) -> None:
    findings = asyncio.run(gather(options))
    if as_json:
        typer.echo(report_json(findings))
    else:
        print_findings(findings)
    code = exit_code(findings)
    if code:
        raise typer.Exit(code)
