"""Tools from MCP servers named in the configuration (``agent.tools.mcp``), through the ``mcp``
package's client: a local command over stdio, or a remote server over streamable HTTP.

Each server is held open by its own task for the service's lifetime (the SDK's transports must
be closed by the task that opened them), and a server that fails to start is logged and left
out rather than stopping the agent. The model sees each tool as ``<server>__<tool>``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from mcp import Client
from mcp.client.stdio import StdioServerParameters

from zhongshu.agent.llm.types import ToolSpec
from zhongshu.agent.tools.registry import Tool, ToolContext, ToolFailed
from zhongshu.runtime.hubconfig import McpServer

log = logging.getLogger("zhongshu.agent.mcp")

SEPARATOR: Final = "__"
CALL_TIMEOUT_S: Final = 30.0
START_TIMEOUT_S: Final = 20.0


@dataclass(frozen=True)
class McpTool:
    spec: ToolSpec
    server: str
    remote_name: str
    client: Client

    async def __call__(self, arguments: Mapping[str, Any], ctx: ToolContext) -> str:
        try:
            result = await self.client.call_tool(
                self.remote_name, dict(arguments), read_timeout_seconds=CALL_TIMEOUT_S
            )
        except Exception as exc:
            raise ToolFailed(f"MCP server {self.server!r}: {type(exc).__name__}") from None
        parts = [getattr(item, "text", None) or f"[{item.type}]" for item in result.content]
        text = "\n".join(parts)
        if result.is_error:
            raise ToolFailed(text or "the MCP tool reported an error")
        return text


def _client_for(config: McpServer) -> Client:
    if config.url is not None:
        return Client(config.url)
    assert config.command is not None  # the config validator wants one of the two
    env = {name: value.get_secret_value() for name, value in config.env.items()}
    return Client(
        StdioServerParameters(command=config.command, args=list(config.args), env=env or None)
    )


class McpConnections:
    """Opens every configured server, lists its tools, and keeps it open until ``close``."""

    def __init__(self, servers: Mapping[str, McpServer]) -> None:
        self._servers = dict(servers)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.tools: list[Tool] = []

    async def open(self) -> None:
        ready = [asyncio.Event() for _ in self._servers]
        for (name, config), event in zip(self._servers.items(), ready, strict=True):
            self._tasks.append(asyncio.create_task(self._hold(name, config, event)))
        if ready:
            await asyncio.wait(
                [asyncio.create_task(e.wait()) for e in ready], timeout=START_TIMEOUT_S
            )

    async def _hold(self, name: str, config: McpServer, ready: asyncio.Event) -> None:
        try:
            async with _client_for(config) as client:
                listing = await client.list_tools()
                wanted = set(config.tools)
                for tool in listing.tools:
                    if wanted and tool.name not in wanted:
                        continue
                    self.tools.append(
                        McpTool(
                            spec=ToolSpec(
                                name=f"{name}{SEPARATOR}{tool.name}",
                                description=tool.description or tool.title or tool.name,
                                parameters=dict(tool.input_schema or {"type": "object"}),
                            ),
                            server=name,
                            remote_name=tool.name,
                            client=client,
                        )
                    )
                log.info("MCP server %s: %d tools", name, len(listing.tools))
                ready.set()
                await self._stop.wait()
        except Exception as exc:
            log.error("MCP server %s is unavailable (%s); its tools are left out", name, exc)
        finally:
            ready.set()

    async def close(self) -> None:
        self._stop.set()
        for task in self._tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 5)
