"""zhongshu.runtime: what every service shares (settings, bus, provisioning, the consume loop,
telemetry and health). The embedded stack and the pytest plugin are in ``zhongshu.devstack``.

Names are imported lazily so that tools needing one submodule (the CLI's ``bus``) do not pay
for OpenTelemetry, uvicorn and the rest at start-up."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zhongshu.runtime.consumer import ConsumerSpec, Delivery
    from zhongshu.runtime.errors import (
        BusUnavailable,
        ConfigurationError,
        PermanentError,
        ProvisionRefused,
    )
    from zhongshu.runtime.service import Service
    from zhongshu.runtime.settings import ServiceSettings, load_settings

_EXPORTS = {
    "ConsumerSpec": "consumer",
    "Delivery": "consumer",
    "BusUnavailable": "errors",
    "ConfigurationError": "errors",
    "PermanentError": "errors",
    "ProvisionRefused": "errors",
    "Service": "service",
    "ServiceSettings": "settings",
    "load_settings": "settings",
}

__all__ = [
    "BusUnavailable",
    "ConfigurationError",
    "ConsumerSpec",
    "Delivery",
    "PermanentError",
    "ProvisionRefused",
    "Service",
    "ServiceSettings",
    "load_settings",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'zhongshu.runtime' has no attribute {name!r}")
    return getattr(importlib.import_module(f"zhongshu.runtime.{module}"), name)
