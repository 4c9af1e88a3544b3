-- What 0001 left out of the events, and the indexes warm-tier pruning needs
-- (ZHONGSHU_WARM_RETENTION_MONTHS deletes finished rows by month, in batches).
-- Columns are only added, never renamed: the gateway reads these tables.

-- TaskRequested.args, WorkflowRef.version, TaskStarted.conversation_id, TaskFailed.retryable.
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS args jsonb NOT NULL DEFAULT '[]'::jsonb;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS workflow_version text;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS conversation_id text;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS retryable boolean;

-- RunStarted.steps (every step id, in a topological order) and RunFailed.step.
ALTER TABLE workflow_runs ADD COLUMN IF NOT EXISTS steps jsonb NOT NULL DEFAULT '[]'::jsonb;
ALTER TABLE workflow_runs ADD COLUMN IF NOT EXISTS failed_step text;

-- The Nats-Schedule-Target header (schedule.<tenant>.<id>.fired, see ADR 0002).
ALTER TABLE schedules ADD COLUMN IF NOT EXISTS target text;

-- A subscription's delivery log, newest first.
CREATE INDEX IF NOT EXISTS callback_deliveries_by_subscription
    ON callback_deliveries (tenant, subscription_id, at DESC);
CREATE INDEX IF NOT EXISTS deliveries_by_tenant ON deliveries (tenant, at DESC);

-- Pruning: finished rows by age.
CREATE INDEX IF NOT EXISTS tasks_finished ON tasks (finished_at)
    WHERE status IN ('completed', 'failed', 'cancelled');
CREATE INDEX IF NOT EXISTS workflow_runs_finished ON workflow_runs (finished_at)
    WHERE status IN ('completed', 'failed');
CREATE INDEX IF NOT EXISTS deliveries_at ON deliveries (at);
CREATE INDEX IF NOT EXISTS callback_deliveries_at ON callback_deliveries (at);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
