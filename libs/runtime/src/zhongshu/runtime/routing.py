"""The router's rules as configuration: commands, keyword and regex rules, card-action
mappings, alert sources and the texts it answers with; the ``routing:`` section of
``zhongshu.yaml``, live like the rest of it (sensible defaults when absent)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


AlertLevel = Literal["warning", "error", "critical"]

# Commands the router answers itself from configuration and the hot cache.
QUERY_COMMANDS = frozenset({"help", "status", "tasks"})


class CommandSpec(_Model):
    """One slash command: its name (without ``/``), usage and what ``/help`` says of it."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    usage: str = ""
    help: str = ""


class TextRule(_Model):
    """A message matching ``keyword`` (substring, case-insensitive) or ``regex`` (searched) is
    treated as ``command``; a regex's named groups become the command's arguments, in order."""

    command: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    keyword: str | None = None
    regex: str | None = None

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regex: {exc}") from None
        return value


class AlertSource(_Model):
    """Messages in ``chat`` or from ``sender`` are alerts (a monitoring bot's group, say)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    chat: str | None = None
    sender: str | None = None
    level: AlertLevel = "warning"


DEFAULT_COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(name="help", help="list the commands"),
    CommandSpec(name="status", usage="[task]", help="status of a task, or of recent tasks"),
    CommandSpec(name="tasks", help="recent tasks"),
    CommandSpec(name="task", usage="<text>", help="start a task"),
    CommandSpec(name="schedule", usage="<cron> <text>", help="run a task on a schedule"),
    CommandSpec(name="reset", help="forget this conversation"),
)


class RoutingRules(_Model):
    """How the router classifies and answers: the `routing:` section of zhongshu.yaml."""

    commands: tuple[CommandSpec, ...] = DEFAULT_COMMANDS
    rules: tuple[TextRule, ...] = ()
    card_actions: dict[str, str] = {}
    """Card ``action_name`` -> command, for cards whose value carries no ``command``."""
    alert_sources: tuple[AlertSource, ...] = ()
    free_text_command: str = "chat"
    """The command free text becomes: an LLM conversation with the agent."""
    refusal_text: str = "Sorry, you are not allowed to use this assistant. Please ask an admin."
    slow_down_text: str = "You are sending messages too fast; please try again in {seconds} s."
    unknown_command_text: str = "Unknown command /{command}. Send /help for the list."
    no_such_task_text: str = "No such task: {task}"
    no_tasks_text: str = "No recent tasks."
    help_header: str = "Commands:"
    tasks_listed: int = Field(default=10, gt=0, le=100)
