"""zhongshu.runtime: what every service shares (settings, bus, provisioning, the consume loop,
telemetry, health and the embedded stack)."""

from zhongshu.runtime.consumer import ConsumerSpec, Delivery
from zhongshu.runtime.errors import (
    BusUnavailable,
    ConfigurationError,
    PermanentError,
    ProvisionRefused,
)
from zhongshu.runtime.service import Service
from zhongshu.runtime.settings import ServiceSettings, load_settings

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
