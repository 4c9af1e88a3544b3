"""Errors the runtime raises or that handlers raise to steer redelivery."""

from __future__ import annotations


class RuntimeFailure(Exception):
    """Base for errors raised by zhongshu.runtime."""


class ServiceStopped(RuntimeFailure):
    """A service's resources were asked for while it is not started (starting or draining)."""


class ConfigurationError(RuntimeFailure):
    """The service's settings are missing or invalid; the message names the variable."""


class BusUnavailable(RuntimeFailure):
    """NATS could not be reached (or JetStream is not enabled there)."""


class ProvisionRefused(RuntimeFailure):
    """A stream change would destroy or silently drop data; the message says which and why."""


class PermanentError(Exception):
    """Raised by a handler (or the decoder) when retrying cannot help: the message goes to the
    DLQ at once instead of after ``max_deliver`` attempts."""


class UndeclaredPublish(PermanentError):
    """A service published to a subject outside the channels it declares (``Service(publishes=
    ...)``): a bug in the service, not in the message, so the message is dead-lettered with an
    alert at once. The declaration is what the AsyncAPI document and the bus permissions are
    derived from, so publishing outside it must fail loudly."""
