"""Step kinds and the worker that runs one step per `workflow.step.>` message."""
