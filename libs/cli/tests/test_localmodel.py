"""``zhongshu up --local-model PATH.gguf``: a model server supervised like a service, with the
agent pointed at it; bad input is refused before anything starts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import nats
import pytest

from zhongshu.cli import localmodel, runstate
from zhongshu.cli.console import CliError
from zhongshu.contracts import envelope as wire
from zhongshu.contracts import headers as H
from zhongshu.contracts import subjects
from zhongshu.contracts.events import CommandRequested, MessageReceived, ReplyGenerated
from zhongshu.contracts.examples import example
from zhongshu.devstack import free_port
from zhongshu.devstack.testing import collect

FAKE_SERVER = f"{sys.executable} -m zhongshu.devstack.fakes.llm"


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "qwen2.5-0.5b-instruct-q4.gguf"
    path.write_bytes(b"GGUF")
    return path


def test_a_missing_model_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="no such file"):
        localmodel.check(tmp_path / "nope.gguf")


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"x")
    with pytest.raises(CliError, match=r"expected a \.gguf"):
        localmodel.check(path)


def test_without_llama_cpp_the_error_says_how_to_install_it(
    model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(localmodel.COMMAND_ENV, raising=False)
    if localmodel.importlib.util.find_spec("llama_cpp") is not None:
        pytest.skip("llama-cpp-python is installed here")
    with pytest.raises(CliError, match="uv sync --extra local-model"):
        localmodel.check(model_file)


def test_the_agent_is_pointed_at_the_model_server(
    model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(localmodel.COMMAND_ENV, "llama-server-x")
    spec, pointers = localmodel.child_spec(model_file, {})
    port = spec.health_port
    assert spec.argv[:1] == ["llama-server-x"]
    assert spec.argv[spec.argv.index("--port") + 1] == str(port)
    assert spec.argv[spec.argv.index("--model") + 1] == str(model_file)
    assert spec.ready_path == "/v1/models"
    assert spec.fixed_port
    assert pointers == {
        "MODEL_ENDPOINT": f"http://127.0.0.1:{port}/v1",
        "MODEL_NAME": "qwen2.5-0.5b-instruct-q4",
    }


def test_up_refuses_a_missing_model_before_starting_anything(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "zhongshu.cli", "up", "--data-dir", str(tmp_path / "d")),
            *("--local-model", str(tmp_path / "missing.gguf")),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode != 0
    assert "no such file" in result.stdout + result.stderr
    assert not (tmp_path / "d").exists()


@contextlib.contextmanager
def running_up(args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "zhongshu.cli", "up", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


async def ask_agent(nats_url: str, tenant: str) -> list[ReplyGenerated]:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        message = msgspec.structs.replace(
            example(MessageReceived), tenant=tenant, app="local", chat_id="oc_local"
        )
        command = CommandRequested(command="task", text="hello local model", message=message)
        env = wire.make_envelope(command, id=uuid.uuid4().hex, source="test", tenant=tenant)
        await js.publish(
            subjects.chat_command("feishu", tenant), wire.encode(env), headers={H.MSG_ID: env.id}
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = await collect(js, subjects.chat_reply("feishu", tenant), within_s=1)
            finals = [wire.decode(m.data, ReplyGenerated).data for m in found]
            finals = [r for r in finals if r.final]
            if finals:
                return finals
        return []
    finally:
        await nc.close()


@pytest.mark.slow
def test_up_with_a_local_model_answers_through_it(model_file: Path, server_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZHONGSHU_", "MODEL_"))}
    env.update(
        COLUMNS="200",
        ZHONGSHU_HTTP_PORT=str(free_port()),
        ZHONGSHU_LOCAL_MODEL_COMMAND=FAKE_SERVER,
        ZHONGSHU_CONFIG=str(server_dir / "absent.yaml"),
    )
    data_dir, ready = server_dir / "data", server_dir / "ready"
    args = ["--data-dir", str(data_dir), "--ready-file", str(ready), "--only", "agent"]
    args += ["--local-model", str(model_file)]
    with running_up(args, env) as proc:
        deadline = time.monotonic() + 90
        while not ready.exists():
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "zhongshu up did not become ready"
            time.sleep(0.2)
        nats_url = runstate.resolve_nats_url(data_dir)
        finals = asyncio.run(ask_agent(nats_url, "t" + uuid.uuid4().hex[:8]))
    output = proc.stdout.read() if proc.stdout else ""
    assert [f.text for f in finals] == ["Answer: hello local model"], output
    assert "local-model" in output
