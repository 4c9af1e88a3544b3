"""The tools the model may call: built-ins (task status, my tasks, send to a configured chat,
fetch an allow-listed URL) and the tools of MCP servers named in the configuration."""
