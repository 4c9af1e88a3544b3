"""No configured secret leaves in a message: every ``SecretStr`` of the live configuration (app
secrets, tokens, robot secrets, model API keys) of at least ``MIN_SECRET_CHARS`` characters is
replaced by ``***`` in what the notifier sends, and the caller raises a critical alert naming
where the secret is configured, never the secret itself.

It runs on every reply: the secrets are collected once per configuration (the live source
hands out a new object when it changes), and a message without any of them costs one substring
search per secret."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, cast

import msgspec
from pydantic import BaseModel, SecretStr

from zhongshu.contracts.events import ReplyGenerated
from zhongshu.notifier.message import Outgoing
from zhongshu.runtime.hubconfig import HubConfig

MIN_SECRET_CHARS = 8
"""Shorter values (a test's "x", a PIN) would redact ordinary words."""
MASK = "***"


def configured_secrets(config: HubConfig) -> tuple[tuple[str, str], ...]:
    """(secret, where it is configured) for every secret long enough to look for, longest
    first (so a secret that contains another is masked whole)."""
    found: dict[str, str] = {}
    for path, value in _walk(config, ""):
        secret = value.get_secret_value()
        if len(secret) >= MIN_SECRET_CHARS:
            found.setdefault(secret, path)
    return tuple(sorted(found.items(), key=lambda item: -len(item[0])))


def _walk(node: Any, path: str) -> Iterator[tuple[str, SecretStr]]:
    if isinstance(node, SecretStr):
        yield path, node
    elif isinstance(node, BaseModel):
        for name in type(node).model_fields:
            yield from _walk(getattr(node, name), f"{path}.{name}" if path else name)
    elif isinstance(node, dict):
        for name, value in node.items():
            yield from _walk(value, f"{path}.{name}" if path else str(name))
    elif isinstance(node, list | tuple):
        for index, value in enumerate(node):
            yield from _walk(value, f"{path}[{index}]")


def redact(text: str, secrets: tuple[tuple[str, str], ...]) -> tuple[str, tuple[str, ...]]:
    """``text`` with every secret masked, and where those secrets are configured."""
    where: list[str] = []
    for secret, path in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
            where.append(path)
    return text, tuple(where)


@dataclass
class SecretGuard:
    """Masks the live configuration's secrets; recomputes them when the configuration changes."""

    _config: HubConfig | None = None
    _secrets: tuple[tuple[str, str], ...] = ()

    def secrets(self, config: HubConfig) -> tuple[tuple[str, str], ...]:
        if config is not self._config:
            self._secrets, self._config = configured_secrets(config), config
        return self._secrets

    def reply(
        self, config: HubConfig, reply: ReplyGenerated
    ) -> tuple[ReplyGenerated, tuple[str, ...]]:
        """The reply with its text, title and card masked; where the secrets found are
        configured (empty: the reply is returned as is)."""
        secrets = self.secrets(config)
        if not secrets:
            return reply, ()
        text, where = redact(reply.text, secrets)
        title, in_title = redact(reply.title, secrets) if reply.title else (reply.title, ())
        card, in_card = reply.card, cast(tuple[str, ...], ())
        if reply.card is not None:
            raw, in_card = redact(json.dumps(reply.card, ensure_ascii=False), secrets)
            card = json.loads(raw) if in_card else reply.card
        found = _unique(where + in_title + in_card)
        if not found:
            return reply, ()
        masked = msgspec.structs.replace(reply, text=text, title=title, card=card)
        return masked, found

    def message(self, config: HubConfig, message: Outgoing) -> tuple[Outgoing, tuple[str, ...]]:
        """An alert's message with its text and title masked."""
        secrets = self.secrets(config)
        if not secrets:
            return message, ()
        text, where = redact(message.text, secrets)
        title, in_title = redact(message.title, secrets) if message.title else (message.title, ())
        found = _unique(where + in_title)
        if not found:
            return message, ()
        return replace(message, text=text, title=title), found


def _unique(paths: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(paths))
