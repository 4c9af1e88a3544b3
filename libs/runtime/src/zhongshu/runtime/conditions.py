"""What this process knows about the things it depends on ("the LLM provider is failing", "Feishu
refuses our credentials for app X"), reported in its heartbeat for the watchdog to alert on.

One registry per process, so code deep inside a service (a model call, a token cache) reports
without plumbing::

    from zhongshu.runtime import conditions
    conditions.set("llm", ok=False, detail="provider answered 503 after 3 attempts")
    conditions.set("llm", ok=True)  # the next call worked

Setting costs a dict write; only a change of ``ok`` moves the condition's ``since``."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from zhongshu.contracts.heartbeats import ConditionState

MAX_DETAIL = 300
"""A condition's detail is shown on an alert card: keep it short (and never put a secret in it)."""
MAX_CONDITIONS = 64
"""Names are few and fixed (``llm``, ``credentials.<app>``); a bug that makes them unbounded must
not grow every heartbeat."""

_lock = threading.Lock()  # token refreshes may run in threads
_conditions: dict[str, ConditionState] = {}


def set(name: str, *, ok: bool, detail: str = "") -> None:
    """Record the condition ``name`` as it is now."""
    detail = detail[:MAX_DETAIL]
    with _lock:
        current = _conditions.get(name)
        if current is not None and current.ok == ok:
            if current.detail != detail:
                _conditions[name] = ConditionState(ok=ok, since=current.since, detail=detail)
            return
        if current is None and len(_conditions) >= MAX_CONDITIONS:
            return
        _conditions[name] = ConditionState(ok=ok, since=datetime.now(UTC), detail=detail)


def clear(name: str) -> None:
    """Forget a condition (an app removed from the configuration)."""
    with _lock:
        _conditions.pop(name, None)


def snapshot() -> dict[str, ConditionState]:
    """Every condition as it is now."""
    with _lock:
        return dict(_conditions)


def reset() -> None:
    """Forget every condition (tests)."""
    with _lock:
        _conditions.clear()
