"""The router's rules: the ``routing:`` section of the live configuration (see
``zhongshu.runtime.routing``), or a YAML file (``ZHONGSHU_ROUTER_RULES``) that pins them for
this process (tests, experiments)."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from zhongshu.runtime.errors import ConfigurationError
from zhongshu.runtime.routing import (
    DEFAULT_COMMANDS,
    QUERY_COMMANDS,
    AlertLevel,
    AlertSource,
    CommandSpec,
    RoutingRules,
    TextRule,
)

RouterRules = RoutingRules

__all__ = [
    "DEFAULT_COMMANDS",
    "QUERY_COMMANDS",
    "AlertLevel",
    "AlertSource",
    "CommandSpec",
    "RouterRules",
    "TextRule",
    "load_rules",
]


def load_rules(path: Path | None) -> RouterRules:
    """The defaults, or the file at ``path`` validated with errors that name the field."""
    if path is None:
        return RouterRules()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigurationError(f"cannot read router rules {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{path}: not valid YAML: {exc}") from None
    try:
        return RouterRules.model_validate(raw)
    except ValidationError as exc:
        problems = [
            f"  {'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
            for e in exc.errors()
        ]
        raise ConfigurationError(f"{path} is invalid:\n" + "\n".join(problems)) from None
