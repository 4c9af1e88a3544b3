"""Alerts the archiver raises (``AlertRaised`` on ``alert.<level>.archiver``), at most one per
problem, level and window: the id is derived from them, so a repeated check, a restart or a
second replica publishes the same ``Nats-Msg-Id`` and JetStream keeps one."""

from __future__ import annotations

import logging

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import subjects
from zhongshu.contracts.events import AlertRaised
from zhongshu.contracts.events.alerts import AlertLevel
from zhongshu.runtime.bus import Publisher

log = logging.getLogger("zhongshu.archiver.alerts")

SOURCE = "archiver"
# Ids remembered to skip republishing; old windows are forgotten past this many.
_REMEMBERED = 4_096


def alert_id(problem: str, level: AlertLevel, window: int) -> str:
    return f"{SOURCE}:{problem}:{level}:{window}"


class Alerts:
    def __init__(self, publisher: Publisher, window_s: float) -> None:
        self.publisher = publisher
        self.window_s = window_s
        self._sent: dict[str, None] = {}

    async def raise_once(
        self,
        problem: str,
        level: AlertLevel,
        title: str,
        detail: str,
        labels: dict[str, str],
        now: float,
    ) -> bool:
        """Publish unless this problem was already raised at this level in this window."""
        msg_id = alert_id(problem, level, int(now // self.window_s))
        if msg_id in self._sent:
            return False
        envelope = wire.make_envelope(
            AlertRaised(
                level=level,
                source=SOURCE,
                title=title,
                detail=detail,
                labels=labels,
                dedupe_key=f"{SOURCE}:{problem}",
            ),
            id=msg_id,
            source=f"zhongshu/{SOURCE}",
            tenant="",
        )
        await self.publisher.publish(
            subjects.alert(level, SOURCE), wire.encode(envelope), msg_id=msg_id
        )
        log.warning("alert %s: %s (%s)", level, title, detail)
        self._sent[msg_id] = None
        while len(self._sent) > _REMEMBERED:
            del self._sent[next(iter(self._sent))]
        return True
