"""The requirements of `uv export` that apply to the image's interpreter, markers resolved.

`pip download --python-version` picks wheels for another interpreter but evaluates environment
markers against the one it runs on: on the host's 3.11.7 it drops ``async-timeout ;
python_full_version < '3.11.3'``, which Debian bookworm's 3.11.2 needs. So build.sh downloads
from this list instead: one ``name==version --hash=...`` per line, markers evaluated for CPython
3.11.2 on Linux x86_64 (glibc), the rest dropped.

    python deploy/image/for_target.py requirements.txt > download.txt
"""

from __future__ import annotations

import sys
from pathlib import Path

from packaging.markers import Marker

TARGET = {
    "implementation_name": "cpython",
    "implementation_version": "3.11.2",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "platform_python_implementation": "CPython",
    "platform_release": "",
    "platform_system": "Linux",
    "platform_version": "",
    "python_full_version": "3.11.2",
    "python_version": "3.11",
    "sys_platform": "linux",
}


def entries(text: str) -> list[str]:
    """One string per requirement: continuation lines joined, comments dropped."""
    out: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        current += " " + line.removesuffix("\\").strip()
        if not line.endswith("\\"):
            out.append(current.strip())
            current = ""
    if current.strip():
        out.append(current.strip())
    return out


def for_target(text: str) -> list[str]:
    kept: list[str] = []
    for entry in entries(text):
        head, *hashes = entry.split(" --hash=")
        requirement, _, marker = head.partition(";")
        if marker.strip() and not Marker(marker.strip()).evaluate(TARGET):
            continue
        kept.append(" ".join([requirement.strip(), *(f"--hash={h.strip()}" for h in hashes)]))
    return kept


if __name__ == "__main__":
    sys.stdout.write("".join(line + "\n" for line in for_target(Path(sys.argv[1]).read_text())))
