"""Errors the runtime raises or that handlers raise to steer redelivery."""

from __future__ import annotations


class RuntimeFailure(Exception):
    """Base for errors raised by zhongshu.runtime."""


class ConfigurationError(RuntimeFailure):
    """The service's settings are missing or invalid; the message names the variable."""


class BusUnavailable(RuntimeFailure):
    """NATS could not be reached (or JetStream is not enabled there)."""


class ProvisionRefused(RuntimeFailure):
    """A stream change would destroy or silently drop data; the message says which and why."""


class PermanentError(Exception):
    """Raised by a handler (or the decoder) when retrying cannot help: the message goes to the
    DLQ at once instead of after ``max_deliver`` attempts."""
