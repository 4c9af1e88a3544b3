"""One inbound chat event, screened (alert source, group rule, whitelist and grants, rate limit),
classified, then answered with a command, a direct reply, an alert or a refusal; chat admin
commands (``/grant``, ``/revoke``, ``/whois``) change or show the grants. Decisions are in
``domain``; this module only fetches what they need and publishes what they return."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from zhongshu.contracts import subjects
from zhongshu.contracts.envelope import Envelope
from zhongshu.contracts.events import OUTCOME_DENIED, CardActionReceived, MessageReceived
from zhongshu.router import domain
from zhongshu.router.adapters.departments import DepartmentSource, NoDepartments
from zhongshu.router.adapters.ratelimit import RateLimiter
from zhongshu.router.adapters.taskcache import TaskCache
from zhongshu.router.metrics import RATE_LIMITED, ROUTED
from zhongshu.router.rules import RouterRules
from zhongshu.runtime import Delivery
from zhongshu.runtime.grants import GrantBook, GrantStore
from zhongshu.runtime.hubconfig import App
from zhongshu.runtime.liveconfig import ConfigSource
from zhongshu.runtime.outbox import Outbox

log = logging.getLogger("zhongshu.router")

SOURCE = "zhongshu/router"


class InboundRouter:
    """Handles one inbound chat event; holds the configuration and the Redis adapters."""

    def __init__(
        self,
        config: ConfigSource,
        rules: RouterRules | None,
        limiter: RateLimiter,
        cache: TaskCache,
        departments: DepartmentSource | None = None,
        grants: GrantBook | None = None,
        grant_store: GrantStore | None = None,
    ) -> None:
        self.config = config
        self._pinned_rules = rules
        self.limiter = limiter
        self.cache = cache
        self.departments = departments or NoDepartments()
        self.grants = grants
        self.grant_store = grant_store

    def granted(self, event: domain.Inbound) -> frozenset[str]:
        """The sender's granted roles in the event's app, from the watched bucket (no I/O)."""
        if self.grants is None:
            return frozenset()
        ids = domain.sender_ids(domain.sender_of(event))
        return self.grants.roles(event.tenant, event.app, ids)

    @property
    def rules(self) -> RouterRules:
        """Pinned rules (a file or a test), else the live configuration's ``routing``."""
        return self._pinned_rules or self.config.current.routing

    async def handle(self, env: Envelope[Any], delivery: Delivery) -> None:
        event = env.data
        if not isinstance(event, MessageReceived | CardActionReceived):
            ROUTED.labels("ignored_event").inc()  # membership changes, other platform events
            return
        app = self.config.current.app(event.app)
        if app is None:
            log.warning("inbound event %s names unknown app %r; ignored", env.id, event.app)
            ROUTED.labels("unknown_app").inc()
            return
        out = Outbox.answering(env, delivery, source=SOURCE)
        if isinstance(event, CardActionReceived):
            click = domain.alert_click(event)
            if click is not None:  # before any other card rule: never the agent's
                await self._alert_action(event, app, click, out)
                return
        granted = self.granted(event)
        screened = domain.screen(event, app, self.rules, granted)
        if isinstance(screened, domain.FromAlertSource):
            alert = domain.alert_raised(screened.message, screened.source, env.id)
            subject = subjects.alert(alert.level, alert.source)
            await out.publish(subject, alert, out.msg_id(domain.STAGE_ALERT))
            ROUTED.labels("alert").inc()
            return
        if isinstance(screened, domain.NotAddressed):
            ROUTED.labels("not_addressed").inc()
            return
        access = screened.access
        if domain.departments_may_decide(app.access, access):  # only then: no call otherwise
            sender = domain.sender_of(event)
            departments = await self.departments.departments(event.app, app, sender)
            access = domain.decide_access(
                app.access,
                user_ids=domain.sender_ids(sender),
                chat_id=event.chat_id,
                departments=departments,
                granted=granted,
            )
        if not access.allowed:
            audit = domain.access_denied(event, access)
            subject = subjects.audit(event.tenant, "access")
            await out.publish(subject, audit, out.msg_id(domain.STAGE_AUDIT))
        verdict = await self.limiter.check(
            app=event.app,
            inbound_id=env.id,
            user=domain.sender_of(event).id,
            chat=event.chat_id,
            per_user=app.rate_limit.per_user,
            per_chat=app.rate_limit.per_chat,
        )
        if not verdict.allowed:
            RATE_LIMITED.labels(verdict.scope).inc()
            ROUTED.labels("rate_limited").inc()
            if verdict.notify:
                text = self.rules.slow_down_text.format(seconds=verdict.retry_after_s)
                await _reply(out, event, text)
            return
        if not access.allowed:
            ROUTED.labels("refused").inc()
            await _reply(out, event, self.rules.refusal_text)
            return
        await self._dispatch(event, screened.what, access, app, out)

    async def _dispatch(
        self,
        event: domain.Inbound,
        what: domain.Classification,
        access: domain.AccessDecision,
        app: App,
        out: Outbox,
    ) -> None:
        roles = access.roles
        if isinstance(what, domain.AdminCommand) and isinstance(event, MessageReceived):
            await self._admin_command(event, what, access, app, out)
            ROUTED.labels("admin_command").inc()
            return
        if isinstance(what, domain.Command):
            command = domain.command_requested(event, what, roles)
            subject = subjects.chat_command(event.platform, event.tenant)
            await out.publish(subject, command, out.msg_id(domain.STAGE_COMMAND))
            ROUTED.labels("command").inc()
            return
        if isinstance(what, domain.UnknownCommand | domain.AdminCommand):
            name = what.command
            text = self.rules.unknown_command_text.format(command=name)
            await _reply(out, event, text)
            ROUTED.labels("unknown_command").inc()
            return
        await _reply(out, event, await self._answer(event.tenant, what))
        if isinstance(event, MessageReceived):  # the record; the router already answered
            query = domain.query_requested(event, what, roles)
            subject = subjects.chat_query(event.platform, event.tenant)
            await out.publish(subject, query, out.msg_id(domain.STAGE_QUERY))
        ROUTED.labels("query").inc()

    async def _admin_command(
        self,
        event: MessageReceived,
        command: domain.AdminCommand,
        access: domain.AccessDecision,
        app: App,
        out: Outbox,
    ) -> None:
        """``/whois`` alone answers anyone allowed; the rest only the app's admins (a refused
        attempt is audited). A grant or revocation is written to the bucket every replica
        watches, audited, and confirmed in the chat."""
        myself = command.command == "whois" and not command.user
        if not myself and not domain.is_admin(access):
            audit = domain.grant_audit(event, command, OUTCOME_DENIED)
            await out.publish(
                subjects.audit(event.tenant, "grants"), audit, out.msg_id(domain.STAGE_AUDIT)
            )
            await _reply(out, event, domain.NOT_ADMIN_TEXT)
            return
        if command.problem:
            await _reply(out, event, command.problem)
            return
        if command.command == "whois":
            user = command.user or event.sender.id
            ids = domain.sender_ids(event.sender) if myself else frozenset({user})
            granted = self.grants.of_user(event.tenant, event.app, ids) if self.grants else []
            await _reply(out, event, domain.whois_text(user, ids, app.access, granted))
            return
        if self.grant_store is None:
            await _reply(out, event, "Grants are not available on this hub.")
            return
        if command.command == "grant":
            at = datetime.now(UTC).isoformat(timespec="seconds")
            changed = await self.grant_store.grant(domain.grant_of(event, command, at))
        else:
            changed = await self.grant_store.revoke(
                event.tenant, event.app, command.user, command.role
            )
        # Audited even when it changed nothing: a redelivery after the write publishes the
        # same record under the same id, so the bus keeps one.
        audit = domain.grant_audit(event, command)
        subject = subjects.audit(event.tenant, "grants")
        await out.publish(subject, audit, out.msg_id(domain.STAGE_AUDIT))
        await _reply(out, event, domain.grant_changed_text(command, changed.changed))

    async def _alert_action(
        self, event: CardActionReceived, app: App, click: domain.AlertClick, out: Outbox
    ) -> None:
        """An alert card's button: an admin's click asks the watchdog for the action (with the
        admin's name from the contacts when the platform gives it: the click carries none);
        anyone else's changes nothing and is audited (the ingress already told them so, where
        it can)."""
        admin = domain.may_handle_alerts(
            app.access, domain.sender_ids(event.user), self.granted(event)
        )
        if admin and click.action is not None:
            name = event.user.name or await self.departments.name(event.app, app, event.user)
            request = domain.alert_action_requested(event, click, name)
            subject = subjects.alert_action(click.key)
            await out.publish(subject, request, out.msg_id(domain.STAGE_ALERT_ACTION))
            ROUTED.labels("alert_action").inc()
            return
        reason = "not an admin of the app" if not admin else "unknown alert action"
        audit = domain.alert_action_denied(event, click, reason)
        subject = subjects.audit(event.tenant, "alert")
        await out.publish(subject, audit, out.msg_id(domain.STAGE_AUDIT))
        ROUTED.labels("alert_action_denied").inc()

    async def _answer(self, tenant: str, query: domain.Query) -> str:
        if query.command == "help":
            return domain.help_text(self.rules)
        if query.command == "status" and query.args:
            status = await self.cache.status(tenant, query.args[0])
            return domain.task_status_text(query.args[0], status, self.rules)
        recent = await self.cache.recent(tenant, self.rules.tasks_listed)
        return domain.tasks_text(list(recent), self.rules)


async def _reply(out: Outbox, event: domain.Inbound, text: str) -> None:
    """The router's one direct reply to the input, under its own id (derived from the input's,
    so a redelivery answers with the same)."""
    reply = domain.reply(event, out.parent_id, text)
    await out.reply(reply, reply.reply_id)
