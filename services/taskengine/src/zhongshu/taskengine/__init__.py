"""zhongshu-taskengine: event triggers and DAG workflow runs (see the README)."""
