"""The bus topology as the services declare it: each service's consumers (what it receives) and
``Service(publishes=...)`` (what it sends), read from every installed service without starting
it. The AsyncAPI document is generated from it, and the bus permissions will be.

    python -m zhongshu.runtime.topology --write docs   # regenerate (what `task docs` runs)
    python -m zhongshu.runtime.topology --check docs   # exit 1 if the committed files drifted
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from zhongshu.contracts import schema
from zhongshu.contracts.channels import CHANNELS, EXTERNAL_PARTIES, Party
from zhongshu.contracts.subjects import filters_overlap
from zhongshu.runtime.errors import RuntimeFailure
from zhongshu.runtime.service import Service

GROUP = "zhongshu.services"


def party(service: Service[Any, Any]) -> Party:
    """What one service sends and receives, by channel id, in the order of CHANNELS."""
    if service.publishes is None:
        raise RuntimeFailure(
            f"{service.name} does not declare what it publishes: give Service(publishes=[...]) "
            "(an empty list when it publishes nothing)"
        )
    filters = [subject for spec in service.consumer_specs for subject in spec.subjects]
    received = {c.id for c in service.receives}
    received |= {c.id for c in CHANNELS if any(filters_overlap(c.pattern, f) for f in filters)}
    sent = {c.id for c in service.publishes}
    return Party(
        description=service.description or service.name,
        send=tuple(c.id for c in CHANNELS if c.id in sent),
        receive=tuple(c.id for c in CHANNELS if c.id in received),
    )


def installed_services() -> dict[str, Service[Any, Any]]:
    """Every service registered in the ``zhongshu.services`` entry-point group, by name."""
    found: dict[str, Service[Any, Any]] = {}
    for entry in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        obj = entry.load()
        if not isinstance(obj, Service):
            raise RuntimeFailure(f"entry point {entry.value} is not a zhongshu.runtime.Service")
        found[entry.name] = obj
    return found


def collect() -> dict[str, Party]:
    """The whole bus: every installed service's declared side, then the parties that are not
    services (the runtime's dead-lettering, the CLI, other teams)."""
    parties = {name: party(service) for name, service in installed_services().items()}
    return {**parties, **EXTERNAL_PARTIES}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zhongshu.runtime.topology", description=__doc__.splitlines()[0]
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", metavar="DOCS_DIR", type=Path, help="regenerate the files")
    mode.add_argument("--check", metavar="DOCS_DIR", type=Path, help="fail if they drifted")
    args = parser.parse_args(argv)
    topology = collect()
    if args.write is not None:
        for relative in schema.write(args.write, topology):
            print(f"wrote {args.write / relative}")
        return 0
    problems = schema.check(args.check, topology)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"generated docs drifted from the code: {schema.REGENERATE_HINT}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
