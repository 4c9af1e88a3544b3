"""Every id the engine publishes under, derived from the run and the stage that publishes it, so
a handler that runs again after a crash or a redelivery publishes the same ids and JetStream
drops the copy. One place, so two stages can never pick the same id by accident."""

from __future__ import annotations

from zhongshu.contracts.ids import derive_msg_id


def run_started(run_id: str) -> str:
    return derive_msg_id(run_id, "run.started")


def run_completed(run_id: str) -> str:
    return derive_msg_id(run_id, "run.completed")


def run_failed(run_id: str) -> str:
    return derive_msg_id(run_id, "run.failed")


def task_started(run_id: str) -> str:
    return derive_msg_id(run_id, "task.started")


def task_completed(run_id: str) -> str:
    return derive_msg_id(run_id, "task.completed")


def task_failed(run_id: str) -> str:
    return derive_msg_id(run_id, "task.failed")


def step_requested(run_id: str, step: str, retry: int = 0) -> str:
    """The first request of a step (a join fired twice publishes it once), then one per retry."""
    stage = f"step.{step}.requested" if retry == 0 else f"step.{step}.requested.{retry}"
    return derive_msg_id(run_id, stage)


def step_started(run_id: str, step: str, attempt: int) -> str:
    return derive_msg_id(run_id, f"step.{step}.started.{attempt}")


def step_completed(run_id: str, step: str) -> str:
    """One per step whatever the attempt: a step completes once."""
    return derive_msg_id(run_id, f"step.{step}.completed")


def step_failed(run_id: str, step: str, failure: int) -> str:
    """The n-th failure of a step (the final one included)."""
    return derive_msg_id(run_id, f"step.{step}.failed.{failure}")


def child_task(run_id: str, step: str, retry: int = 0) -> str:
    """The agent task of an infer step: the same across redeliveries of one attempt (the model
    is asked once), a new one for each retry after a failure."""
    stage = f"step.{step}" if retry == 0 else f"step.{step}.retry.{retry}"
    return derive_msg_id(run_id, stage)


def reply(run_id: str, step: str, app: str, chat_id: str) -> str:
    """A notify step's reply to one chat: the same across retries, so the notifier sends it
    once."""
    return derive_msg_id(run_id, f"step.{step}.notify.{app}.{chat_id}")


def callback_event(run_id: str, step: str, index: int) -> str:
    """The idempotency key a notify step's callback receiver sees (`X-Zhongshu-Event-Id`)."""
    return derive_msg_id(run_id, f"step.{step}.callback.{index}")


def trigger_task(event_id: str, tenant: str, trigger_id: str) -> str:
    """The task one event creates through one trigger: the same event seen twice is one task."""
    return derive_msg_id(event_id, f"trigger.{tenant}.{trigger_id}")
