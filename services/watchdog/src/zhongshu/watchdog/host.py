"""This host's CPU, memory and disks (the data directory, JetStream's store): a warning when one
stays above the threshold for the sustained window."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psutil

from zhongshu.runtime.hubconfig import WatchdogConfig
from zhongshu.watchdog.domain import Finding, Sustained


@dataclass(frozen=True)
class Reading:
    check: str
    subject: str
    what: str
    percent: float


def read_host(disks: Sequence[Path]) -> list[Reading]:
    """CPU since the previous call, memory, and each watched file system once (by device)."""
    readings = [
        Reading("host.cpu", "cpu", "CPU", psutil.cpu_percent(None)),
        Reading("host.memory", "memory", "memory", psutil.virtual_memory().percent),
    ]
    devices: set[int] = set()
    for path in disks:
        try:
            device = os.stat(path).st_dev
        except OSError:
            continue  # not on this host (or not created yet)
        if device in devices:
            continue
        devices.add(device)
        usage = psutil.disk_usage(str(path))
        readings.append(Reading("host.disk", str(path), f"disk of {path}", usage.percent))
    return readings


class HostCheck:
    def __init__(
        self, disks: Sequence[Path], read: Callable[[Sequence[Path]], list[Reading]] = read_host
    ) -> None:
        self._disks = list(disks)
        self._read = read
        self._above = Sustained()
        self._host = socket.gethostname()
        psutil.cpu_percent(None)  # the first reading only sets the baseline

    def run(self, config: WatchdogConfig, now: datetime) -> list[Finding]:
        findings: list[Finding] = []
        seen: set[str] = set()
        for reading in self._read(self._disks):
            name = f"{reading.check}:{reading.subject}"
            seen.add(name)
            above = reading.percent > config.resource_percent
            lasted = self._above.update(name, above, now)
            if not above:
                continue
            findings.append(
                Finding(
                    check=reading.check,
                    subject=f"{self._host}:{reading.subject}",
                    level="warning",
                    title=f"{self._host}: {reading.what} above {config.resource_percent:g} %",
                    detail=f"{reading.what} at {reading.percent:.0f} % for {lasted:.0f} s "
                    f"(warns after {config.sustained_s:g} s above {config.resource_percent:g} %)",
                    due=lasted >= config.sustained_s,
                    labels={"host": self._host, "percent": f"{reading.percent:.1f}"},
                )
            )
        self._above.keep_only(seen)
        return findings
