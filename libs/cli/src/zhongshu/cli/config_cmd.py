"""``zhongshu config check|push``: validate ``zhongshu.yaml`` and load it into the ``config`` KV
bucket that running services watch (they apply a new revision within about a second)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from rich.markup import escape

from zhongshu.cli.console import CliError, console, warn
from zhongshu.runtime import bus
from zhongshu.runtime.hubconfig import HubConfig, parse_config

CLIENT_NAME = "zhongshu-cli"


def read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        raise CliError(f"{path} does not exist (set ZHONGSHU_CONFIG or pass --file)") from None
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None


def describe(config: HubConfig) -> str:
    apps = ", ".join(
        f"{name} ({app.platform}, tenant {app.tenant})" for name, app in config.apps.items()
    )
    return (
        f"{len(config.tenants)} tenant(s), {len(config.apps)} app(s){': ' + apps if apps else ''}"
    )


def open_to_everyone(config: HubConfig) -> list[str]:
    """Apps whose ``access`` lists no users, chats or departments: the router lets everyone who
    can reach the bot in (admins, grants and ``deny`` still apply). Valid, and right for a trial,
    but MLPS level 3 expects access denied unless granted, so the commands say so."""
    return [
        name
        for name, app in config.apps.items()
        if not (app.access.users or app.access.chats or app.access.departments)
    ]


def warn_about_open_access(config: HubConfig) -> None:
    for name in open_to_everyone(config):
        warn(
            f"apps.{name}.access lists no users, chats or departments: everyone who can reach "
            "the bot may use it; list who may (or grant roles) unless that is what you want"
        )


def check(path: Path) -> None:
    """Validate strictly: every ``${VAR}`` must be set here. Secrets are never printed."""
    config = parse_config(read(path), source=str(path))
    console.print(f"[green]✓[/] {escape(str(path))} is valid: {escape(describe(config))}")
    warn_about_open_access(config)


async def push_text(url: str, text: str, source: str) -> int:
    from zhongshu.runtime import auditing, liveconfig

    nc = await bus.connect(url, name=CLIENT_NAME)
    try:
        js = bus.jetstream(nc)
        revision = await liveconfig.push(js, text, source=source)
        not_audited = await auditing.record(
            js,
            source="zhongshu/cli",
            actor=auditing.operator(),
            action="config.pushed",
            target="config",
            kind="config",
            detail=f"{source} as revision {revision}",
            labels={"revision": str(revision), "source": source},
        )
        if not_audited:
            warn(f"the push is not in the audit trail ({not_audited})")
        return revision
    finally:
        await nc.close()


def push(url: str, path: Path) -> None:
    text = read(path)
    config = parse_config(text, source=str(path))
    revision = asyncio.run(push_text(url, text, str(path)))
    console.print(
        f"[green]✓[/] pushed {escape(str(path))} as revision {revision}: "
        f"{escape(describe(config))}; running services apply it within seconds"
    )
    warn_about_open_access(config)
