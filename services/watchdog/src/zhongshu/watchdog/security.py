"""Data-security events, from the audit trail's `security` records: a burst of refused webhook
signatures or API tokens from one source, requests for apps that are not configured, and
requests to internal addresses the hub refused to make (SSRF: callbacks, ``fetch_url``).

Refusals are counted per source in a sliding window of event time, so a replay of old audit
records (a fresh consumer, a redelivery) counts nothing that is outside the window now."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

from zhongshu.contracts.events import AuditRecorded
from zhongshu.contracts.events.alerts import AlertLevel
from zhongshu.runtime.hubconfig import WatchdogConfig
from zhongshu.watchdog.domain import Bursts, Finding

SIGNATURE_REASONS: Final = frozenset(
    {
        "bad signature",
        "missing signature",
        "bad token",
        "missing token",
        "bad timestamp",
        "timestamp outside window",
        "cannot decrypt",
    }
)
"""Ingress refusals that mean "not signed by the platform" (Feishu and DingTalk)."""
UNKNOWN_APP: Final = "unknown app"
WEBHOOK_REJECTED: Final = ".webhook.rejected"
TOKEN_REJECTED: Final = "gateway.token.rejected"
"""What the gateway audits for a refused API token (its labels hold how many it stands for)."""
OUTBOUND_REFUSED: Final = frozenset({"callback.refused", "tool.refused"})
"""What the notifier and the agent audit for a request to an internal address they refused."""
_SEP = "\x1f"


class SecurityWatch:
    def __init__(self) -> None:
        self._signatures = Bursts()
        self._tokens = Bursts()
        self._unknown_apps = Bursts()
        self._outbound = Bursts()

    def record(self, event: AuditRecorded, at: datetime, config: WatchdogConfig) -> None:
        """Count one security audit record (anything else is ignored)."""
        if at < datetime.now(at.tzinfo) - timedelta(seconds=config.security_window_s):
            return
        reason = event.labels.get("reason", "")
        if event.action.endswith(WEBHOOK_REJECTED):
            platform = event.action.split(".", 1)[0]
            source = f"{platform}{_SEP}{event.actor}"
            if reason == UNKNOWN_APP:
                self._unknown_apps.add(source, at, config.unknown_app_requests)
            elif reason in SIGNATURE_REASONS:
                self._signatures.add(source, at, config.signature_failures)
        elif event.action in OUTBOUND_REFUSED:
            # Per tenant and actor (a subscription, a chat user): who points the hub inward.
            source = f"{event.tenant or '_'}{_SEP}{event.actor}"
            self._outbound.add(source, at, config.outbound_refusals)
        elif event.action == TOKEN_REJECTED:
            count = event.labels.get("count", "1")
            self._tokens.add(
                f"api{_SEP}{event.actor}",
                at,
                config.jwt_failures,
                int(count) if count.isdigit() else 1,
            )

    def run(self, config: WatchdogConfig, now: datetime) -> list[Finding]:
        window = config.security_window_s
        kinds: tuple[tuple[Bursts, str, int, str, AlertLevel], ...] = (
            (self._signatures, "security.signature", config.signature_failures,
             "refused webhook signatures", "critical"),
            (self._tokens, "security.jwt", config.jwt_failures, "refused API tokens", "critical"),
            (self._unknown_apps, "security.unknown_app", config.unknown_app_requests,
             "webhooks for apps that are not configured", "critical"),
            (self._outbound, "security.outbound", config.outbound_refusals,
             "requests to internal addresses refused", "error"),
        )  # fmt: skip
        findings = []
        for bursts, check, threshold, what, level in kinds:
            for source, count in sorted(bursts.counts(now, window).items()):
                platform, _, actor = source.partition(_SEP)
                findings.append(
                    Finding(
                        check=check,
                        subject=f"{platform}:{actor}",
                        level=level,
                        title=f"{platform}: {what} from {actor}",
                        detail=f"{count} in the last {window:g} s (critical from {threshold})",
                        due=count >= threshold,
                        labels={"platform": platform, "remote": actor, "count": str(count)},
                    )
                )
        return findings
