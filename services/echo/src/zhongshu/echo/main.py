"""Echo: the runtime's fault-test subject (not started by `zhongshu up`).
Consumes ``chat.inbound.>``, publishes ``chat.reply.<platform>.<tenant>``. Wiring only."""

from __future__ import annotations

from zhongshu.contracts import channels
from zhongshu.echo import handlers
from zhongshu.echo.settings import EchoSettings
from zhongshu.runtime import Service

service: Service[EchoSettings, None] = Service(
    "echo",
    EchoSettings,
    description="The runtime's fault-test subject.",
    publishes=[channels.CHAT_REPLIES],
)
handlers.register(service)

if __name__ == "__main__":
    service.main()
