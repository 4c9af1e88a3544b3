"""The services, from their heartbeats: down (no instance beats any more), unready, a process
burning CPU, a condition it reports failing (the LLM provider, a platform refusing our
credentials)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime

from zhongshu.contracts.heartbeats import Heartbeat, since_ok
from zhongshu.runtime.buckets import Held
from zhongshu.runtime.hubconfig import WatchdogConfig
from zhongshu.watchdog.domain import Finding, Sustained

SELF = "watchdog"
"""Its own heartbeat says nothing to itself: nobody would hear it down."""

CONDITION_TITLES = {
    "llm": "the LLM provider is failing",
}


def condition_title(service: str, name: str) -> str:
    if name in CONDITION_TITLES:
        return f"{service}: {CONDITION_TITLES[name]}"
    if name.startswith("credentials."):
        return f"{service}: the platform refuses the credentials of app {name.split('.', 1)[1]}"
    return f"{service}: {name} failing"


MISSED_BEATS = 3
"""An instance that beats slower than `down_after_s` allows is stale only after this many."""


def _silent(held: Held[Heartbeat], now: datetime) -> float:
    return (now - held.written_at).total_seconds()


def _stale_after(held: Held[Heartbeat], config: WatchdogConfig) -> float:
    return max(config.down_after_s, MISSED_BEATS * held.value.interval_s)


class ServicesCheck:
    def __init__(self) -> None:
        self._unready = Sustained()
        self._busy = Sustained()

    def run(
        self,
        beats: Mapping[str, Held[Heartbeat]],
        down_before: Iterable[str],
        config: WatchdogConfig,
        now: datetime,
    ) -> list[Finding]:
        """``down_before``: services with an open "down" alert (their keys may have expired)."""
        by_service: dict[str, list[Held[Heartbeat]]] = defaultdict(list)
        for held in beats.values():
            if held.value.service != SELF:
                by_service[held.value.service].append(held)
        findings: list[Finding] = []
        seen: set[str] = set()
        for service, instances in sorted(by_service.items()):
            fresh = [h for h in instances if _silent(h, now) <= _stale_after(h, config)]
            if not fresh:
                findings.append(self._down(service, instances, config, now))
                continue
            findings.extend(self._unready_now(service, fresh, config, now, seen))
            findings.extend(self._busy_now(service, fresh, config, now, seen))
            findings.extend(self._conditions(service, fresh, config, now))
        for service in set(down_before) - set(by_service):
            findings.append(
                Finding(
                    check="service.down",
                    subject=service,
                    level="error",
                    title=f"{service} is down",
                    detail="no instance has written a heartbeat since it went down",
                    labels={"service": service},
                )
            )
        self._unready.keep_only(seen)
        self._busy.keep_only(seen)
        return findings

    def _down(
        self, service: str, instances: list[Held[Heartbeat]], config: WatchdogConfig, now: datetime
    ) -> Finding:
        last = max(instances, key=lambda h: h.written_at)
        silent = _silent(last, now)
        beat = last.value
        return Finding(
            check="service.down",
            subject=service,
            level="error",
            title=f"{service} is down",
            detail=f"no heartbeat from any instance for {silent:.0f} s (last: {beat.instance}, "
            f"pid {beat.pid} on {beat.host})",
            due=silent - _stale_after(last, config) >= config.grace_s,
            labels={"service": service, "host": beat.host},
        )

    def _unready_now(
        self,
        service: str,
        fresh: list[Held[Heartbeat]],
        config: WatchdogConfig,
        now: datetime,
        seen: set[str],
    ) -> list[Finding]:
        unready = [h.value for h in fresh if not h.value.ready]
        seen.add(service)
        lasted = self._unready.update(service, bool(unready), now)
        if not unready:
            return []
        failing = sorted({name for beat in unready for name, ok in beat.checks.items() if not ok})
        return [
            Finding(
                check="service.unready",
                subject=service,
                level="error",
                title=f"{service} is not ready",
                detail=f"{len(unready)} of {len(fresh)} instance(s) unready for {lasted:.0f} s; "
                f"failing checks: {', '.join(failing) or 'none reported'}",
                due=lasted >= config.grace_s,
                labels={"service": service, "checks": ",".join(failing)},
            )
        ]

    def _busy_now(
        self,
        service: str,
        fresh: list[Held[Heartbeat]],
        config: WatchdogConfig,
        now: datetime,
        seen: set[str],
    ) -> list[Finding]:
        findings = []
        busiest: Finding | None = None
        for held in fresh:
            beat = held.value
            name = f"{service}:{beat.instance}"
            seen.add(name)
            above = beat.cpu_percent > config.process_cpu_percent
            lasted = self._busy.update(name, above, now)
            if not above:
                continue
            found = Finding(
                check="service.cpu",
                subject=service,
                level="warning",
                title=f"{service}: process CPU above {config.process_cpu_percent:g} %",
                detail=f"{beat.instance} (pid {beat.pid} on {beat.host}) at "
                f"{beat.cpu_percent:.0f} % of a core for {lasted:.0f} s",
                due=lasted >= config.sustained_s,
                labels={"service": service, "host": beat.host, "instance": beat.instance},
            )
            if busiest is None or (found.due and not busiest.due):
                busiest = found
        if busiest is not None:
            findings.append(busiest)
        return findings

    def _conditions(
        self, service: str, fresh: list[Held[Heartbeat]], config: WatchdogConfig, now: datetime
    ) -> list[Finding]:
        failing: dict[str, tuple[float, str, str]] = {}
        for held in fresh:
            for name, condition in held.value.conditions.items():
                if condition.ok:
                    continue
                lasted = since_ok(condition, now)
                if name not in failing or lasted > failing[name][0]:
                    failing[name] = (lasted, condition.detail, held.value.instance)
        return [
            Finding(
                check="service.condition",
                subject=f"{service}:{name}",
                level="error",
                title=condition_title(service, name),
                detail=f"failing for {lasted:.0f} s on {instance}: {detail}".rstrip(": "),
                due=lasted >= config.grace_s,
                labels={"service": service, "condition": name},
            )
            for name, (lasted, detail, instance) in sorted(failing.items())
        ]
