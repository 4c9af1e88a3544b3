"""What a workflow's notify step POSTs to a callback target (`{url}` in its `targets`): a
CloudEvents structured-mode JSON envelope of type `NOTIFICATION_TYPE` whose `data` is a
`WorkflowNotification`, signed like subscription callbacks (`definitions.sign_callback` with the
secret of `definitions.TASK_CALLBACKS_ID`) and carrying `X-Zhongshu-Event-Id`, the same on every
retry, for the receiver to deduplicate.

It is an HTTP body, not a bus event, so it is not in `events.EVENT_TYPES`."""

from __future__ import annotations

from typing import Any, Final

import msgspec

NOTIFICATION_TYPE: Final = "zhongshu.workflow.notification_posted.v1"


class WorkflowNotification(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A notify step's message: its text and the outputs of the steps it needs."""

    run_id: str
    workflow: str
    step: str
    text: str
    inputs: dict[str, Any] = msgspec.field(default_factory=dict)
    """The outputs of the steps it needs, by step id, and the run's inputs under `run`."""
