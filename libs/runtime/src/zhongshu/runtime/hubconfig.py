"""The hub's configuration file, ``zhongshu.yaml``: tenants, apps (bots) with their platform
credentials, access rules and limits, alert routes and model providers.

Validated at start with errors that name the field; ``${VAR}`` and ``${file:/path}`` are
resolved so secrets live in the environment or in files, and secrets are ``SecretStr`` so they
are never echoed in reprs, logs or errors."""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)

from zhongshu.runtime.errors import ConfigurationError
from zhongshu.runtime.routing import RoutingRules

CONFIG_ENV = "ZHONGSHU_CONFIG"
DEFAULT_PATH = Path("config/zhongshu.yaml")
_REFERENCE = re.compile(r"\$\{(file:)?([^}]+)\}")
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(s|sec|second|min|minute|h|hour)\s*$")
_RATE_SECONDS = {"s": 1, "sec": 1, "second": 1, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rate(_Model):
    """A limit such as ``10/min``: ``count`` events per ``period_s`` seconds."""

    count: int = Field(gt=0)
    period_s: float = Field(gt=0)

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if isinstance(value, str):
            match = _RATE.match(value)
            if not match:
                raise ValueError(f"expected a rate like '10/min', got {value!r}")
            return {"count": int(match.group(1)), "period_s": _RATE_SECONDS[match.group(2)]}
        return value


class FeishuCredentials(_Model):
    app_id: str
    app_secret: SecretStr
    encrypt_key: SecretStr | None = None
    verification_token: SecretStr | None = None
    bot_open_id: str | None = None  # the bot's own open_id, to tell when it is @-mentioned
    receive: tuple[Literal["webhook", "long_connection"], ...] = ("webhook",)


class DingTalkCredentials(_Model):
    app_key: str
    app_secret: SecretStr
    robot_code: str | None = None
    receive: tuple[Literal["http", "stream"], ...] = ("http",)
    card_template_id: str | None = None  # an AI card template: streamed replies type into one card


class AccessRules(_Model):
    """Who may talk to the app; empty lists mean everyone."""

    @model_validator(mode="before")
    @classmethod
    def _ids_are_strings(cls, value: Any) -> Any:
        """DingTalk department ids are numbers; YAML writes them unquoted."""
        if isinstance(value, dict):
            return {
                k: [str(i) if isinstance(i, int) else i for i in v] if isinstance(v, list) else v
                for k, v in value.items()
            }
        return value

    users: tuple[str, ...] = ()
    chats: tuple[str, ...] = ()
    departments: tuple[str, ...] = ()
    admins: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()


class GroupRules(_Model):
    require_mention: bool = True
    prefixes: tuple[str, ...] = ("/",)


class RateLimits(_Model):
    per_user: Rate | None = None
    per_chat: Rate | None = None


class App(_Model):
    tenant: str
    platform: Literal["feishu", "dingtalk"]
    feishu: FeishuCredentials | None = None
    dingtalk: DingTalkCredentials | None = None
    access: AccessRules = AccessRules()
    group: GroupRules = GroupRules()
    rate_limit: RateLimits = RateLimits()
    persona: str = ""

    @model_validator(mode="after")
    def _credentials_match_platform(self) -> App:
        if getattr(self, self.platform) is None:
            raise ValueError(
                f"platform is {self.platform} but the '{self.platform}' section is missing"
            )
        other = "dingtalk" if self.platform == "feishu" else "feishu"
        if getattr(self, other) is not None:
            raise ValueError(f"platform is {self.platform} but a '{other}' section is given")
        return self


class Tenant(_Model):
    name: str = ""


class AlertRoute(_Model):
    app: str | None = None
    chat: str | None = None
    dingtalk_robot: SecretStr | None = None
    feishu_robot: SecretStr | None = None
    secret: SecretStr | None = None


class ModelProvider(_Model):
    name: str
    endpoint: str
    api_key: SecretStr | None = None
    model: str


class ModelConfig(_Model):
    providers: tuple[ModelProvider, ...] = ()
    qps: float = Field(default=10, gt=0)
    timeout_s: float = Field(default=30, gt=0)
    max_concurrent: int = Field(default=5, gt=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0)


AppName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
ToolName = Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]


class InferenceCacheConfig(_Model):
    """The exact-match inference cache (R20): same model, messages and parameters, same answer."""

    enabled: bool = True
    ttl_s: float = Field(default=24 * 3600, gt=0)
    fresh_commands: tuple[str, ...] = ()
    """Commands whose answers depend on fresh state: never answered from the cache."""
    fresh_apps: tuple[str, ...] = ()
    """Apps whose conversations are never answered from the cache."""


class MemoryConfig(_Model):
    """Multi-turn memory per conversation, in the hot tier."""

    ttl_s: float = Field(default=7 * 24 * 3600, gt=0)
    token_budget: int = Field(default=3000, gt=100)
    """Older turns beyond this are summarized into one note."""


class ChatTarget(_Model):
    app: str
    chat: str


class McpServer(_Model):
    """An MCP server whose tools the model may call: a local command (stdio) or a URL."""

    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, SecretStr] = {}
    url: str | None = None
    """Streamable-HTTP endpoint of a remote MCP server."""
    tools: tuple[str, ...] = ()
    """Only these of its tools (empty = all)."""

    @model_validator(mode="after")
    def _command_or_url(self) -> McpServer:
        if (self.command is None) == (self.url is None):
            raise ValueError("give exactly one of `command` (stdio) and `url` (streamable HTTP)")
        return self


_HOST_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$")


def _hosts_or_networks(entries: tuple[str, ...]) -> tuple[str, ...]:
    """Each an IP address, a network in CIDR notation or a host name: a mistyped network must
    not pass as a host name that never matches."""
    for entry in entries:
        try:
            ipaddress.ip_network(entry.strip("[]"), strict=False)
        except ValueError:
            if "/" in entry or ":" in entry or not _HOST_NAME.match(entry):
                raise ValueError(f"{entry!r} is not a host name, an IP address or a CIDR") from None
    return entries


HostsOrNetworks = Annotated[tuple[str, ...], AfterValidator(_hosts_or_networks)]


class ToolsConfig(_Model):
    enabled: tuple[ToolName, ...] = ("task_status", "list_tasks", "send_message", "fetch_url")
    fetch_allow: tuple[str, ...] = ()
    """URL prefixes `fetch_url` may read (empty = the tool is off)."""
    fetch_allow_internal: HostsOrNetworks = ()
    """Hosts (exact names) and networks (CIDRs) `fetch_url` may reach although they are
    loopback, link-local or private: by default only public addresses are read, whatever the
    prefixes say (docs/operations/security.md)."""
    chats: dict[ToolName, ChatTarget] = {}
    """Named chats `send_message` may post to."""
    mcp: dict[ToolName, McpServer] = {}
    max_rounds: int = Field(default=4, gt=0, le=16)
    """Tool-call rounds per answer before the model must answer in text."""


class CallbacksConfig(_Model):
    """Callbacks: signed POSTs to URLs that API clients name (task and subscription callbacks,
    workflows' notify steps)."""

    allow_internal: HostsOrNetworks = ()
    """Hosts (exact names) and networks (CIDRs) callbacks may reach although they are loopback,
    link-local or private; by default only public addresses are called
    (docs/operations/security.md)."""


class AgentConfig(_Model):
    persona: str = "You are zhongshu, a helpful assistant for this team. Answer concisely."
    """The system prompt of apps without their own `persona`."""
    cache: InferenceCacheConfig = InferenceCacheConfig()
    memory: MemoryConfig = MemoryConfig()
    tools: ToolsConfig = ToolsConfig()


class WatchdogConfig(_Model):
    """What the watchdog alerts on and when (docs/operations/alerts.md). Read live: a pushed
    change applies at its next check."""

    check_interval_s: float = Field(default=5, gt=0, le=300)
    """How often every check runs."""
    resource_percent: float = Field(default=70, gt=0, le=100)
    """Host CPU, memory and disk (data directory, JetStream storage) use that raises a warning."""
    process_cpu_percent: float = Field(default=70, gt=0)
    """A service process's CPU (% of one core) that raises a warning."""
    sustained_s: float = Field(default=300, ge=0)
    """How long a resource must stay above its threshold, or a consumer's lag keep growing,
    before the warning."""
    lag_min_pending: int = Field(default=1, ge=1)
    """A consumer's backlog counts as lag from this many pending messages."""
    down_after_s: float = Field(default=20, gt=0)
    """A heartbeat older than this is a process that stopped beating (heartbeats come every 5 s)."""
    grace_s: float = Field(default=60, ge=0)
    """How long a service may be down or unready, or a condition (LLM provider, credentials)
    fail, before the error."""
    security_window_s: float = Field(default=60, gt=0)
    """The sliding window in which security refusals from one source are counted."""
    signature_failures: int = Field(default=20, gt=0)
    """Refused webhook signatures or tokens from one source within the window: critical."""
    jwt_failures: int = Field(default=20, gt=0)
    """Refused API tokens from one source within the window: critical."""
    unknown_app_requests: int = Field(default=5, gt=0)
    """Webhooks for an app that is not configured, from one source within the window: critical."""
    outbound_refusals: int = Field(default=1, gt=0)
    """Callbacks or `fetch_url` reads refused because they pointed at an internal address, from
    one subscription or user within the window: error (docs/operations/security.md)."""
    remind_s: float = Field(default=3600, ge=0)
    """An open alert nobody acknowledged is raised again this often; 0 = never."""


class HubConfig(_Model):
    tenants: dict[str, Tenant] = {}
    apps: dict[AppName, App] = {}
    alerts: dict[Literal["warning", "error", "critical"], tuple[AlertRoute, ...]] = {}
    model: ModelConfig = ModelConfig()
    agent: AgentConfig = AgentConfig()
    callbacks: CallbacksConfig = CallbacksConfig()
    routing: RoutingRules = RoutingRules()
    watchdog: WatchdogConfig = WatchdogConfig()

    @model_validator(mode="after")
    def _apps_name_known_tenants(self) -> HubConfig:
        for name, app in self.apps.items():
            if self.tenants and app.tenant not in self.tenants:
                raise ValueError(f"apps.{name}.tenant: unknown tenant {app.tenant!r}")
        return self

    def app(self, name: str) -> App | None:
        return self.apps.get(name)


def resolve_references(
    value: Any, environ: dict[str, str], where: str = "", missing: list[str] | None = None
) -> Any:
    """Replace ``${VAR}`` with the variable and ``${file:/path}`` with the file's content
    (trailing newline stripped), everywhere in the parsed YAML. With a ``missing`` list, a
    reference that cannot be resolved becomes ``""`` and its field is recorded there instead of
    raising (a service reading the shared configuration may lack other services' secrets)."""
    if isinstance(value, dict):
        return {
            k: resolve_references(v, environ, f"{where}.{k}" if where else str(k), missing)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            resolve_references(v, environ, f"{where}[{i}]", missing) for i, v in enumerate(value)
        ]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        is_file, name = match.group(1), match.group(2).strip()
        if is_file:
            try:
                return Path(name).read_text().rstrip("\n")
            except OSError as exc:
                problem = f"{where}: cannot read {name}: {exc.strerror}"
        elif name in environ:
            return environ[name]
        else:
            problem = f"{where}: environment variable {name} is not set"
        if missing is None:
            raise ConfigurationError(problem)
        missing.append(problem)
        return ""

    return _REFERENCE.sub(substitute, value)


def parse_config(
    text: str,
    *,
    source: str = "zhongshu.yaml",
    environ: dict[str, str] | None = None,
    missing: list[str] | None = None,
) -> HubConfig:
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigurationError(f"{source}: expected a mapping at the top level")
    resolved = resolve_references(
        raw, dict(os.environ if environ is None else environ), missing=missing
    )
    try:
        return HubConfig.model_validate(resolved)
    except ValidationError as exc:
        problems = [
            f"  {'.'.join(str(p) for p in error['loc']) or '(top level)'}: {error['msg']}"
            for error in exc.errors()
        ]
        raise ConfigurationError(f"{source} is invalid:\n" + "\n".join(problems)) from None


def config_path(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get(CONFIG_ENV) or DEFAULT_PATH)


def load_config(path: Path | None = None, *, environ: dict[str, str] | None = None) -> HubConfig:
    """Read and validate the configuration file (``ZHONGSHU_CONFIG``, default
    ``./config/zhongshu.yaml``). A missing file is an empty configuration: no apps yet."""
    path = path or config_path(environ)
    if not path.exists():
        return HubConfig()
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from None
    return parse_config(text, source=str(path), environ=environ)
