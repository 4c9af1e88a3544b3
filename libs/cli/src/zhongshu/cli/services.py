"""Finding services: every installed package that registers a ``zhongshu.runtime.Service`` in the
``zhongshu.services`` entry-point group (``echo = "zhongshu.echo.main:service"``)."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

from zhongshu.cli.console import EXIT_USAGE, CliError

if TYPE_CHECKING:
    from zhongshu.runtime import Service

GROUP = "zhongshu.services"


def available() -> dict[str, EntryPoint]:
    """Installed services by name, sorted."""
    found = {ep.name: ep for ep in entry_points(group=GROUP)}
    return dict(sorted(found.items()))


def names() -> list[str]:
    return list(available())


def _listing(found: dict[str, EntryPoint]) -> str:
    return ", ".join(found) if found else f"none installed (entry-point group {GROUP!r})"


def select(only: list[str] | None) -> list[str]:
    """The services to run: all, or those named in ``only`` (comma-separated values allowed)."""
    found = available()
    if not only:
        return list(found)
    wanted = [n.strip() for item in only for n in item.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in found]
    if unknown:
        raise CliError(
            f"unknown service(s) {', '.join(unknown)}; available: {_listing(found)}",
            code=EXIT_USAGE,
        )
    return list(dict.fromkeys(wanted))


def load(name: str) -> Service:
    """Import a service's entry point; a readable :class:`CliError` when it is missing or broken."""
    from zhongshu.runtime import Service

    found = available()
    if name not in found:
        raise CliError(f"unknown service {name!r}; available: {_listing(found)}", code=EXIT_USAGE)
    try:
        obj = found[name].load()
    except Exception as exc:
        raise CliError(
            f"cannot load service {name!r} from {found[name].value}: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(obj, Service):
        raise CliError(
            f"entry point {found[name].value} is a {type(obj).__name__}, "
            "not a zhongshu.runtime.Service"
        )
    return obj
