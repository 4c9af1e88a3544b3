"""The engine as its own process (``python -m zhongshu.cli run taskengine``), killed with
SIGKILL in the middle of a step: restarted, it resumes the run at that step and completes it
once (one RunCompleted, one notify reply, each step completed once)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from services.taskengine.tests.taskengine_testing import WAIT_S, DataServer, Hub, of_type
from zhongshu.contracts.events import (
    RunCompleted,
    StepCompleted,
    StepStarted,
    TaskCompleted,
    TaskStarted,
)
from zhongshu.devstack.testing import eventually
from zhongshu.taskengine.dsl import chat, collect, infer, notify, workflow

ROOT = Path(__file__).resolve().parents[3]
ACK_WAIT_S = "2"


class EngineProcess:
    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    async def kill(self) -> None:
        if self.proc.returncode is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()


async def spawn_engine(hub: Hub, tmp_path: Path, name: str) -> EngineProcess:
    config = tmp_path / "zhongshu.yaml"
    config.write_text(hub.config_yaml())
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZHONGSHU_")}
    env |= {
        "ZHONGSHU_NATS_URL": hub.nats_url,
        "ZHONGSHU_CONFIG": str(config),
        "ZHONGSHU_ACK_WAIT_S": ACK_WAIT_S,
        "ZHONGSHU_HEALTH_PORT": "0",
        "ZHONGSHU_DRAIN_TIMEOUT_S": "5",
        "ZHONGSHU_TASKENGINE_RETRY_BACKOFF_S": "0.1",
    }
    log = tmp_path / f"{name}.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "zhongshu.cli",
            "run",
            "taskengine",
            env=env,
            cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    engine = EngineProcess(proc, log)

    def ready() -> bool:
        assert proc.returncode is None, f"the engine exited:\n{engine.output()}"
        return "READY taskengine" in engine.output()

    await eventually(ready, "the engine process to start", WAIT_S)
    return engine


@pytest_asyncio.fixture
async def processes() -> AsyncIterator[list[EngineProcess]]:
    started: list[EngineProcess] = []
    try:
        yield started
    finally:
        for process in started:
            await process.kill()


async def test_a_run_killed_mid_step_resumes_at_that_step_and_completes_once(
    hub: Hub, tmp_path: Path, processes: list[EngineProcess]
) -> None:
    async with DataServer() as server:
        await hub.start_agent()
        await hub.put_workflow(
            workflow(
                "resilient",
                tenant=hub.tenant,
                flow=collect("fetch", url=server.url("held"))
                >> [
                    infer("summary", prompt="Summarize {{steps.fetch.json}}"),
                    infer("risks", prompt="Risks at {{steps.fetch.json.temperature}}?"),
                ]
                >> notify(
                    "tell",
                    targets=[chat(hub.app, "oc_ops")],
                    text="{{steps.summary.text}} / {{steps.risks.text}}",
                ),
            )
        )
        first = await spawn_engine(hub, tmp_path, "engine-1")
        processes.append(first)
        run_id = await hub.request_run("resilient")

        await server.wait_for_hit("held")  # the collect step is under way in the first process
        await first.kill()
        server.release()

        second = await spawn_engine(hub, tmp_path, "engine-2")
        processes.append(second)
        end = await hub.run_end(run_id)
        await hub.settle()

    assert isinstance(end, RunCompleted), second.output()
    events = await hub.run_events(run_id)
    assert len(of_type(events, RunCompleted)) == 1
    completed = [e.step for e in of_type(events, StepCompleted)]
    assert sorted(completed) == ["fetch", "risks", "summary", "tell"]
    # The step it was on ran again as a second attempt; nothing before it did.
    assert [(e.step, e.attempt) for e in of_type(events, StepStarted) if e.step == "fetch"] == [
        ("fetch", 1),
        ("fetch", 2),
    ]
    assert server.hits["held"] == 2
    replies = await hub.replies()
    assert [r.text for r in replies] == [
        'Answer: Summarize {"city":"Hangzhou","temperature":31} / Answer: Risks at 31?'
    ]
    assert [type(e) for e in await hub.task_events(run_id)] == [TaskStarted, TaskCompleted]
