"""Echo: a placeholder service that exercises the runtime until the router lands.
Consumes ``chat.inbound.>``, publishes ``chat.reply.<platform>.<tenant>``."""

from __future__ import annotations

from zhongshu.echo.handlers import service

__all__ = ["service"]

if __name__ == "__main__":
    service.main()
