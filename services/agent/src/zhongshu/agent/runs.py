"""The agent's work for one input: a chat command or a task request becomes a task with a
lifecycle, an answer from the model (cached, streamed, with tools and memory), and replies.

A user always hears back: the answer, or a clear failure (no model configured, the model gave
up within its budget). Anything else that fails (Redis, the bus) raises, so the runtime retries
the input with backoff and, in the end, dead-letters it with an alert."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

import httpx

from zhongshu.agent import domain
from zhongshu.agent.adapters.memory import Conversation, ConversationMemory, Turn
from zhongshu.agent.adapters.taskstatus import TaskStatusStore
from zhongshu.agent.inference import Answer, Inference, NoModelConfigured
from zhongshu.agent.llm.errors import LLMGaveUp
from zhongshu.agent.llm.types import ChatMessage
from zhongshu.agent.metrics import TASKS
from zhongshu.agent.models import Models, effective_setup
from zhongshu.agent.outputs import SOURCE, ChatTarget, ReplyStream, TaskLog
from zhongshu.agent.settings import AgentSettings
from zhongshu.agent.tools.builtin import builtin_tools
from zhongshu.agent.tools.registry import Tool, ToolContext, ToolRegistry
from zhongshu.contracts import headers, subjects
from zhongshu.contracts.envelope import Envelope
from zhongshu.contracts.events import (
    AuditRecorded,
    CommandRequested,
    MessageReceived,
    ReplyGenerated,
    TaskRequested,
)
from zhongshu.contracts.ids import derive_msg_id, schedule_fire_id
from zhongshu.runtime import Delivery, telemetry
from zhongshu.runtime.hubconfig import HubConfig
from zhongshu.runtime.liveconfig import ConfigSource
from zhongshu.runtime.outbox import Outbox

log = logging.getLogger("zhongshu.agent")


def configured_secrets(config: HubConfig, settings: AgentSettings) -> list[str]:
    """Every secret value the hub knows, so none reaches a prompt (see ``domain.redact``).
    Memoized per configuration object: a new revision of the live config is a new object."""
    key = (id(config), id(settings))
    if _secrets_memo.get("key") != key:
        _secrets_memo.update(key=key, value=_collect_secrets(config, settings))
    return cast(list[str], _secrets_memo["value"])


_secrets_memo: dict[str, Any] = {}


def _collect_secrets(config: HubConfig, settings: AgentSettings) -> list[str]:
    found: list[str] = []

    def walk(value: Any) -> None:
        if hasattr(value, "get_secret_value"):
            found.append(value.get_secret_value())
        elif hasattr(value, "__pydantic_fields__"):
            for name in type(value).__pydantic_fields__:
                walk(getattr(value, name))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, tuple | list):
            for item in value:
                walk(item)

    walk(config)
    walk(settings)
    return found


class Agent:
    def __init__(
        self,
        *,
        settings: AgentSettings,
        config: ConfigSource,
        models: Models,
        inference: Inference,
        memory: ConversationMemory,
        statuses: TaskStatusStore,
        http: httpx.AsyncClient,
        fetch_http: httpx.AsyncClient | None = None,
        extra_tools: Iterable[Tool] = (),
    ) -> None:
        """``fetch_http``: the client of ``fetch_url``, guarded against internal addresses
        (``platforms.egress``); ``http`` (the models' pool) when not given."""
        self.settings = settings
        self.config = config
        self.models = models
        self.inference = inference
        self.memory = memory
        self.statuses = statuses
        self.http = http
        self.fetch_http = fetch_http or http
        self.extra_tools = list(extra_tools)
        self._setup_for: HubConfig | None = None
        self._tools_for: tuple[HubConfig, ToolRegistry] | None = None

    # ------------------------------------------------------------------ inputs

    async def on_command(self, env: Envelope[CommandRequested], delivery: Delivery) -> None:
        command = env.data
        origin = command.origin
        plan = domain.plan_command(command, env.id)
        target = ChatTarget(
            platform=origin.platform,
            app=origin.app,
            tenant=origin.tenant,
            chat_id=origin.chat_id,
            reply_handle=origin.reply_handle,
            in_reply_to=env.correlation_id or env.id,
        )
        outbox = Outbox.answering(env, delivery, source=SOURCE, tenant=origin.tenant)
        conversation = env.conversation_id or f"{origin.app}:{origin.chat_id}"
        reply_id = derive_msg_id(env.id, domain.STAGE_REPLY)
        if plan.mode == "reset":
            await self.memory.reset(origin.tenant, conversation)
        if plan.mode in ("reset", "notice"):
            await outbox.reply(target.reply(reply_id, plan.notice))
            return
        user = (origin.sender if isinstance(origin, MessageReceived) else origin.user).id
        task = TaskLog(
            outbox,
            self.statuses,
            task_id=plan.task_id,
            attempt=delivery.num_delivered,
            worker=self.settings.agent_worker,
            title=plan.title,
            origin="chat",
            requested_by=user,
        )
        stream = ReplyStream(
            outbox,
            target,
            reply_id,
            attempt=delivery.num_delivered,
            interval_s=self.settings.agent_stream_interval_s,
        )
        async with delivery.keepalive():
            await self._run(
                plan,
                task,
                outbox,
                app=origin.app,
                user=user,
                conversation=conversation if plan.mode == "converse" else None,
                turn_id=env.id,
                stream=stream,
            )

    async def on_task(self, env: Envelope[TaskRequested], delivery: Delivery) -> None:
        request = env.data
        task_id = request.task_id
        fired = delivery.headers.get(headers.SCHEDULE_NEXT)
        if fired:  # every firing of a schedule carries the same body: name each one apart
            task_id = schedule_fire_id(task_id, fired)
        plan = domain.plan_task(request, task_id)
        if plan.mode == "skip":
            return
        status = await self.statuses.get(request.tenant, task_id)
        if status is not None and status.status == "cancelled":  # by the API before it ran
            log.info("task %s was cancelled before it started; not run", task_id)
            return
        outbox = Outbox.answering(env, delivery, source=SOURCE, tenant=request.tenant)
        task = TaskLog(
            outbox,
            self.statuses,
            task_id=task_id,
            attempt=delivery.num_delivered,
            worker=self.settings.agent_worker,
            title=plan.title,
            origin=request.origin,
            requested_by=request.requested_by,
        )
        async with delivery.keepalive():
            text = await self._run(plan, task, outbox, app=None, user=request.requested_by)
        if text is None:
            return
        config = self.config.current
        for app_name, chat_id in plan.deliver_to_chats:
            app = config.app(app_name)
            if app is None or app.tenant != request.tenant:
                log.warning("task %s: no app %r in its tenant; not delivered", task_id, app_name)
                continue
            target = ChatTarget(
                platform=app.platform, app=app_name, tenant=request.tenant, chat_id=chat_id
            )
            reply_id = derive_msg_id(task_id, f"deliver.{app_name}.{chat_id}")
            await outbox.reply(target.reply(reply_id, text))

    # ------------------------------------------------------------------ the run

    async def _run(
        self,
        plan: domain.Plan,
        task: TaskLog,
        outbox: Outbox,
        *,
        app: str | None,
        user: str,
        conversation: str | None = None,
        turn_id: str = "",
        stream: ReplyStream | None = None,
    ) -> str | None:
        """Run the task; returns the text the users should see (answer or failure notice), or
        None when there is nothing to deliver."""
        telemetry.annotate(task_id=task.task_id)  # `zhongshu trace <task id>` finds it
        config = self.config.current
        if config is not self._setup_for:  # a new revision of the live configuration
            self.models.refresh(effective_setup(config, self.settings))
            self._setup_for = config
        # TaskStarted and the running status wait until the model is asked (task.started): a
        # cached answer follows the cache's one round trip to Redis at once (P4).
        try:
            return await self._answer(
                config, plan, task, outbox, app, user, conversation, turn_id, stream
            )
        finally:
            await task.settled()

    async def _answer(
        self,
        config: HubConfig,
        plan: domain.Plan,
        task: TaskLog,
        outbox: Outbox,
        app: str | None,
        user: str,
        conversation: str | None,
        turn_id: str,
        stream: ReplyStream | None,
    ) -> str | None:
        messages, remembered = await self._messages(config, plan, app, conversation)
        progress = _Progress(task, stream)
        context = ToolContext(
            tenant=outbox.tenant,
            task_id=task.task_id,
            user=user,
            app=app,
            publish_reply=self._tool_reply(outbox),
            publish_audit=self._tool_audit(outbox),
        )
        try:
            answer = await self.inference.answer(
                self.models.client,
                self.models.setup,
                messages,
                tools=self._tools(config),
                tool_context=context,
                max_rounds=config.agent.tools.max_rounds,
                cacheable=self._cacheable(config, plan, app),
                on_text=progress.on_text,
                on_tool=task.tool_called,
                on_upstream=task.started,
            )
        except NoModelConfigured:
            return await self._fail(task, stream, domain.NO_MODEL_TEXT, "no_model", "no_model")
        except LLMGaveUp as exc:
            log.warning("task %s: the model gave up: %s", task.task_id, exc)
            reason = domain.describe_failure(exc.code)
            return await self._fail(task, stream, domain.failure_text(reason), reason, exc.code)
        # The user first: the final reply, then TaskCompleted in the same write to the bus.
        await progress.flush(answer)
        if stream is not None:
            await stream.final(answer.text)
        await task.completed(answer.text)
        TASKS.labels("cached" if answer.cached else "completed").inc()
        if conversation is not None:
            await self._remember(
                outbox.tenant, conversation, turn_id, plan.prompt, answer.text, remembered
            )
        return answer.text

    async def _fail(
        self, task: TaskLog, stream: ReplyStream | None, text: str, reason: str, code: str
    ) -> str:
        if stream is not None:
            await stream.final(text)
        await task.failed(reason, code, retryable=code != "no_model")
        TASKS.labels("failed").inc()
        return text

    async def _messages(
        self, config: HubConfig, plan: domain.Plan, app: str | None, conversation: str | None
    ) -> tuple[tuple[ChatMessage, ...], Conversation | None]:
        """The prompt, and the conversation it was built from (None for a single question)."""
        app_config = config.app(app) if app else None
        persona = (app_config.persona if app_config else "") or config.agent.persona
        system = domain.system_prompt(persona, configured_secrets(config, self.settings))
        if conversation is None:
            return domain.build_messages(system, plan.prompt), None
        tenant = app_config.tenant if app_config else ""
        remembered = await self.memory.load(tenant, conversation)
        history = [(turn.role, turn.content) for turn in remembered.turns]
        messages = domain.build_messages(
            system, plan.prompt, summary=remembered.summary, history=history
        )
        return messages, remembered

    async def _remember(
        self,
        tenant: str,
        conversation: str,
        turn_id: str,
        prompt: str,
        answer: str,
        remembered: Conversation | None,
    ) -> None:
        now = time.time()
        turns = (
            Turn(id=f"{turn_id}:user", role="user", content=prompt, at=now),
            Turn(id=f"{turn_id}:assistant", role="assistant", content=answer, at=now),
        )
        await self.memory.append(tenant, conversation, *turns)
        if remembered is not None and not self.memory.over_budget(remembered, *turns):
            # Within the budget as read at the start: no need to read it all again. A turn
            # another replica appended meanwhile is counted by the next answer's compaction.
            return

        async def summarize(summary: str, turns: tuple[Turn, ...]) -> str:
            messages = domain.summarize_messages(summary, ((t.role, t.content) for t in turns))
            return await self.inference.summarize(self.models.client, messages)

        try:
            await self.memory.compact(tenant, conversation, summarize)
        except (LLMGaveUp, NoModelConfigured) as exc:
            # The turns stay; compaction is tried again after the next answer.
            log.info("conversation %s not compacted: %s", conversation, exc)

    def _tools(self, config: HubConfig) -> ToolRegistry:
        """Built once per revision of the configuration, not per input."""
        if self._tools_for is None or self._tools_for[0] is not config:
            builtins = builtin_tools(
                config,
                self.statuses,
                self.fetch_http,
                max_bytes=self.settings.agent_fetch_max_bytes,
            )
            self._tools_for = (config, ToolRegistry([*builtins, *self.extra_tools]))
        return self._tools_for[1]

    @staticmethod
    def _cacheable(config: HubConfig, plan: domain.Plan, app: str | None) -> bool:
        cache = config.agent.cache
        return (
            cache.enabled
            and plan.command not in cache.fresh_commands
            and (app is None or app not in cache.fresh_apps)
        )

    @staticmethod
    def _tool_reply(outbox: Outbox) -> Callable[[ReplyGenerated], Awaitable[None]]:
        async def publish(reply: ReplyGenerated) -> None:
            await outbox.reply(reply)

        return publish

    @staticmethod
    def _tool_audit(outbox: Outbox) -> Callable[[AuditRecorded, str], Awaitable[None]]:
        async def publish(record: AuditRecorded, stage: str) -> None:
            subject = subjects.audit(outbox.tenant or "_", "security")
            await outbox.publish(subject, record, outbox.msg_id(stage))

        return publish


class _Progress:
    """Streams the growing text: throttled reply chunks, each also a ``TaskProgressed``."""

    def __init__(self, task: TaskLog, stream: ReplyStream | None) -> None:
        self._task = task
        self._stream = stream
        self._reported = ""

    async def on_text(self, text: str) -> None:
        if self._stream is None or not await self._stream.text(text):
            return
        await self._task.progressed(domain.new_text(self._reported, text))
        self._reported = text

    async def flush(self, answer: Answer) -> None:
        """The rest of a streamed text as a last progress event (the final reply follows); an
        answer that arrived whole (cached) is recorded by ``TaskCompleted`` alone."""
        if self._reported and answer.text != self._reported:
            await self._task.progressed(domain.new_text(self._reported, answer.text))
            self._reported = answer.text
