"""The built-in tools: what a chat user may ask the agent to look up or do for them.

Each acts only inside the task's tenant: a task cannot read another tenant's tasks or post to
another tenant's chats, whatever the model asks."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import httpx
import msgspec

from zhongshu.agent.adapters.taskstatus import TaskStatusStore
from zhongshu.agent.llm.types import ToolSpec
from zhongshu.agent.tools.registry import FunctionTool, Tool, ToolContext, ToolFailed
from zhongshu.contracts.events import AuditRecorded, ReplyGenerated
from zhongshu.contracts.events.audit import OUTCOME_DENIED
from zhongshu.contracts.ids import derive_msg_id
from zhongshu.platforms.egress import OutboundRefused
from zhongshu.runtime.hubconfig import HubConfig

LIST_LIMIT_MAX = 20


def _string(arguments: Mapping[str, Any], name: str) -> str:
    value = arguments.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ToolFailed(f"`{name}` must be a non-empty string")
    return value.strip()


def task_status_tool(statuses: TaskStatusStore) -> Tool:
    async def run(arguments: Mapping[str, Any], ctx: ToolContext) -> str:
        task_id = _string(arguments, "task_id")
        status = await statuses.get(ctx.tenant, task_id)
        if status is None:
            return f"no task {task_id!r} (it may have expired from the 7-day hot cache)"
        return msgspec.json.encode(status).decode()

    return FunctionTool(
        ToolSpec(
            name="task_status",
            description="The current status of one task by its id.",
            parameters={
                "type": "object",
                "properties": {"task_id": {"type": "string", "description": "the task id"}},
                "required": ["task_id"],
            },
        ),
        run,
    )


def list_tasks_tool(statuses: TaskStatusStore) -> Tool:
    async def run(arguments: Mapping[str, Any], ctx: ToolContext) -> str:
        limit = arguments.get("limit", 10)
        if not isinstance(limit, int) or not 1 <= limit <= LIST_LIMIT_MAX:
            raise ToolFailed(f"`limit` must be an integer from 1 to {LIST_LIMIT_MAX}")
        mine = arguments.get("mine", True) is not False
        found = await statuses.recent(ctx.tenant, limit, requested_by=ctx.user if mine else None)
        if not found:
            return "no recent tasks"
        return msgspec.json.encode(found).decode()

    return FunctionTool(
        ToolSpec(
            name="list_tasks",
            description="The most recent tasks, newest first (by default only the user's own).",
            parameters={
                "type": "object",
                "properties": {
                    "limit": {"type": "integer", "minimum": 1, "maximum": LIST_LIMIT_MAX},
                    "mine": {"type": "boolean", "description": "only the asking user's tasks"},
                },
            },
        ),
        run,
    )


def send_message_tool(config: HubConfig) -> Tool:
    chats = config.agent.tools.chats

    async def run(arguments: Mapping[str, Any], ctx: ToolContext) -> str:
        name = _string(arguments, "chat")
        text = _string(arguments, "text")
        target = chats.get(name)
        app = config.app(target.app) if target is not None else None
        if target is None or app is None or app.tenant != ctx.tenant:
            raise ToolFailed(f"no chat named {name!r}; known: {', '.join(sorted(chats))}")
        # Same task, chat and text -> same id: a rerun after a crash does not post twice.
        digest = hashlib.sha256(f"{name}\n{text}".encode()).hexdigest()[:16]
        reply_id = derive_msg_id(ctx.task_id, f"send.{digest}")
        await ctx.publish_reply(
            ReplyGenerated(
                reply_id=reply_id,
                platform=app.platform,
                app=target.app,
                tenant=ctx.tenant,
                chat_id=target.chat,
                text=text,
            )
        )
        return f"sent to {name}"

    return FunctionTool(
        ToolSpec(
            name="send_message",
            description="Post a text message in one of the team's configured chats.",
            parameters={
                "type": "object",
                "properties": {
                    "chat": {"type": "string", "enum": sorted(chats)},
                    "text": {"type": "string"},
                },
                "required": ["chat", "text"],
            },
        ),
        run,
    )


MAX_REDIRECTS = 3


def fetch_url_tool(
    allowed_prefixes: tuple[str, ...], http: httpx.AsyncClient, *, max_bytes: int
) -> Tool:
    """Reads what the model names, within the allow-listed prefixes: every redirect is
    followed only to another allow-listed URL, and ``http`` (``platforms.egress``) connects
    only to public addresses unless the operator allowed internal ones, whatever a prefix or
    a DNS answer says. A refusal is shown to the model and put on the audit trail."""

    def allowed(url: str) -> bool:
        return any(url.startswith(prefix) for prefix in allowed_prefixes)

    async def run(arguments: Mapping[str, Any], ctx: ToolContext) -> str:
        url = _string(arguments, "url")
        if not allowed(url):
            raise ToolFailed("that URL is not on the allow-list")
        try:
            for _ in range(MAX_REDIRECTS + 1):
                async with http.stream("GET", url, follow_redirects=False) as response:
                    if response.is_redirect:
                        url = str(response.url.join(response.headers["location"]))
                        if not allowed(url):
                            raise ToolFailed("redirected to a URL that is not on the allow-list")
                        continue
                    body = bytearray()
                    async for part in response.aiter_bytes():
                        body.extend(part)
                        if len(body) >= max_bytes:
                            break
                    break
            else:
                raise ToolFailed(f"more than {MAX_REDIRECTS} redirects")
        except OutboundRefused as exc:
            await _audit_refusal(ctx, exc, url)
            raise ToolFailed(f"refused: {exc}") from None
        except httpx.HTTPError as exc:
            raise ToolFailed(f"fetch failed: {type(exc).__name__}") from None
        text = bytes(body[:max_bytes]).decode(response.encoding or "utf-8", errors="replace")
        return f"HTTP {response.status_code}\n{text}"

    return FunctionTool(
        ToolSpec(
            name="fetch_url",
            description="Read a web page or API from the allow-listed addresses: "
            + ", ".join(allowed_prefixes),
            parameters={
                "type": "object",
                "properties": {"url": {"type": "string"}},
                "required": ["url"],
            },
        ),
        run,
    )


async def _audit_refusal(ctx: ToolContext, refused: OutboundRefused, url: str) -> None:
    if ctx.publish_audit is None:
        return
    record = AuditRecorded(
        actor=ctx.user,
        action="tool.refused",
        target="fetch_url",
        outcome=OUTCOME_DENIED,
        tenant=ctx.tenant,
        detail=str(refused),
        labels={"tool": "fetch_url", "host": refused.host, "task_id": ctx.task_id},
    )
    digest = hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    await ctx.publish_audit(record, f"tool.refused.{digest}")


def builtin_tools(
    config: HubConfig, statuses: TaskStatusStore, http: httpx.AsyncClient, *, max_bytes: int
) -> list[Tool]:
    """The enabled built-ins; a tool with nothing to act on (no chats, no allow-list) is off."""
    settings = config.agent.tools
    enabled = set(settings.enabled)
    tools: list[Tool] = []
    if "task_status" in enabled:
        tools.append(task_status_tool(statuses))
    if "list_tasks" in enabled:
        tools.append(list_tasks_tool(statuses))
    if "send_message" in enabled and settings.chats:
        tools.append(send_message_tool(config))
    if "fetch_url" in enabled and settings.fetch_allow:
        tools.append(fetch_url_tool(settings.fetch_allow, http, max_bytes=max_bytes))
    return tools
