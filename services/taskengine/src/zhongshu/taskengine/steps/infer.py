"""infer: the prompt becomes an agent task, and the step waits for it without holding a
worker: the task's outcome arrives on `task.event.>` and `children` turns it into the step's.

The task id is derived from the run, the step and the retry, so a worker that crashes after
asking asks again under the same id (JetStream drops the copy: the model is asked once); its
envelope is correlated to the run, which is how `children` finds the run again."""

from __future__ import annotations

from zhongshu.contracts import subjects
from zhongshu.contracts.events import TaskOrigin, TaskRequested
from zhongshu.taskengine import naming
from zhongshu.taskengine.steps.outcomes import Awaiting, Failed, Outcome, StepContext


async def run(ctx: StepContext) -> Outcome:
    request = ctx.request
    prompt = request.config.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return Failed("config.prompt is missing")
    task_id = naming.child_task(request.run_id, request.step, ctx.retries_used)
    task = TaskRequested(
        task_id=task_id,
        tenant=request.tenant,
        requested_by=ctx.run.requested_by or f"workflow:{request.workflow}",
        origin=origin_of(ctx.run.requested_by),
        prompt=prompt,
        timeout_s=request.timeout_s,
    )
    await ctx.outbox.publish(
        subjects.task_requested(request.tenant), task, task_id, correlation_id=request.run_id
    )
    return Awaiting()


def origin_of(requested_by: str) -> TaskOrigin:
    """The run's origin as far as its requester tells (a step's task has no origin of its own:
    it inherits the run's, for quotas and read models)."""
    if requested_by.startswith("schedule:"):
        return "schedule"
    if requested_by.startswith("events:"):
        return "event"
    return "api"
