"""Helpers for ingress-dingtalk's tests (the fixtures in conftest.py build on them)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from zhongshu.runtime import Service


@dataclass(frozen=True)
class DingTalkApp:
    """One configured DingTalk app of a test (unique names: leases and tenants are shared
    by the session's NATS server)."""

    name: str
    tenant: str
    app_key: str
    app_secret: str
    config: Path


def write_app(directory: Path, receive: tuple[str, ...] = ("http",)) -> DingTalkApp:
    """A zhongshu.yaml under ``directory`` with one DingTalk app receiving through ``receive``."""
    suffix = uuid.uuid4().hex[:8]
    app = DingTalkApp(
        name=f"dt-{suffix}",
        tenant=f"t{suffix}",
        app_key=f"ding{suffix}",
        app_secret=f"secret-{uuid.uuid4().hex}",
        config=directory / f"zhongshu-{suffix}.yaml",
    )
    document = {
        "tenants": {app.tenant: {"name": "Test"}},
        "apps": {
            app.name: {
                "tenant": app.tenant,
                "platform": "dingtalk",
                "dingtalk": {
                    "app_key": app.app_key,
                    "app_secret": app.app_secret,
                    "robot_code": app.app_key,
                    "receive": list(receive),
                },
            }
        },
    }
    app.config.write_text(yaml.safe_dump(document))
    return app


StartReplica = Callable[..., Awaitable[Service]]
MakeApp = Callable[..., DingTalkApp]


def base_url(service: Service) -> str:
    return f"http://127.0.0.1:{service.health_port}"
