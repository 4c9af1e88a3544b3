"""A real MCP server over stdio for the agent's tests: one tool, ``shout``."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

server = MCPServer("shout")


@server.tool()
def shout(text: str) -> str:
    """Upper-case the text."""
    return text.upper()


if __name__ == "__main__":
    server.run()
