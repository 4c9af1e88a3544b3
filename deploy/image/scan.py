"""Vulnerability scan of the image's Python environment, from its SBOM (build/image/sbom.cdx.json,
written by deploy/image/build.sh inside the image build): every PyPI component (its purl,
``pkg:pypi/name@version``) is looked up by pip-audit in the PyPI advisory database (OSV with
``--service osv``). The workspace's own packages are not on PyPI and are left out.

It reports; it does not fail the build on findings, nor when the database cannot be reached (then
it says so): patching is a release decision (docs/operations/releases.md). ``--strict`` makes
findings exit 1, for a release pipeline that should stop on them.

    .tools/bin/uv run python deploy/image/scan.py [--sbom build/image/sbom.cdx.json] [--strict]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote

REPO = Path(__file__).resolve().parents[2]
OWN_PREFIX = "zhongshu-"


def pypi_pins(sbom: dict[str, Any]) -> list[str]:
    """``name==version`` for every PyPI component but the workspace's own."""
    pins: set[str] = set()
    for component in sbom.get("components", []):
        purl = str(component.get("purl", ""))
        if not purl.startswith("pkg:pypi/") or "@" not in purl:
            continue
        name, _, version = purl.removeprefix("pkg:pypi/").partition("@")
        name, version = unquote(name), unquote(version.split("?", 1)[0].split("#", 1)[0])
        if not name.startswith(OWN_PREFIX):
            pins.add(f"{name}=={version}")
    return sorted(pins)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sbom", type=Path, default=REPO / "build/image/sbom.cdx.json")
    parser.add_argument("--service", choices=["pypi", "osv"], default="pypi")
    parser.add_argument("--strict", action="store_true", help="exit 1 when something is found")
    parser.add_argument("--report", type=Path, default=REPO / "build/image/vulnerabilities.json")
    args = parser.parse_args()

    sbom = json.loads(args.sbom.read_text())
    pins = pypi_pins(sbom)
    print(f"[scan] {len(pins)} PyPI packages from {args.sbom.relative_to(REPO)}", flush=True)
    audit = shutil.which("pip-audit", path=str(Path(sys.executable).parent)) or shutil.which(
        "pip-audit"
    )
    if audit is None:
        print("[scan] skipped: pip-audit is not installed (it is in the dev group: uv sync)")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text("".join(f"{pin}\n" for pin in pins))
        done = subprocess.run(
            [audit, "--requirement", str(requirements), "--no-deps", "--disable-pip",
             "--vulnerability-service", args.service, "--format", "json",
             "--progress-spinner", "off", "--timeout", "20", "--desc", "off"],
            capture_output=True, text=True, check=False, timeout=600,
        )  # fmt: skip
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"[scan] not scanned: the {args.service} vulnerability database was not reachable "
              f"or pip-audit failed ({reason})")  # fmt: skip
        return 0
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    found = [
        (d["name"], d["version"], v)
        for d in report.get("dependencies", [])
        for v in d.get("vulns", [])
    ]
    for name, version, vuln in found:
        fixed = ", ".join(vuln.get("fix_versions", [])) or "no fix yet"
        aliases = ", ".join(vuln.get("aliases", []))
        print(f"[scan] {name} {version}: {vuln['id']} ({aliases}) fixed in {fixed}")
    skipped = [d for d in report.get("dependencies", []) if d.get("skip_reason")]
    if pins and len(skipped) == len(pins):
        print(
            f"[scan] not scanned: none of the {len(pins)} packages could be looked up in the "
            f"{args.service} vulnerability database from here ({skipped[0]['skip_reason']})"
        )
        return 0
    print(
        f"[scan] {len(found)} known vulnerabilities in {len(pins)} packages "
        f"({len(skipped)} not looked up); report: {args.report.relative_to(REPO)}"
    )
    return 1 if args.strict and found else 0


if __name__ == "__main__":
    sys.exit(main())
