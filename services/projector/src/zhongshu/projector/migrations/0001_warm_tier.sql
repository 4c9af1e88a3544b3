-- The warm tier (R8): read models the projector builds from the streams and the gateway reads.
-- Every row records the stream sequence that last changed it (`last_seq`), and
-- `projection_offsets` the last sequence applied per stream, so replaying a stream from
-- sequence 0 changes nothing: an upsert applies only when its sequence is newer.

CREATE TABLE IF NOT EXISTS projection_offsets (
    stream      text PRIMARY KEY,
    last_seq    bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per task (TASKS: task.requested.*, task.event.*.*).
CREATE TABLE IF NOT EXISTS tasks (
    tenant        text NOT NULL,
    task_id       text NOT NULL,
    status        text NOT NULL,          -- queued | running | completed | failed | cancelled
    origin        text NOT NULL DEFAULT '',
    requested_by  text NOT NULL DEFAULT '',
    title         text NOT NULL DEFAULT '',
    prompt        text,
    command       text,
    workflow      text,
    inputs        jsonb NOT NULL DEFAULT '{}'::jsonb,
    deliver_to    jsonb NOT NULL DEFAULT '[]'::jsonb,
    schedule_id   text,
    result_text   text,
    result_data   jsonb,
    error_code    text,
    reason        text,
    attempts      integer NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL,
    started_at    timestamptz,
    finished_at   timestamptz,
    duration_ms   integer,
    updated_at    timestamptz NOT NULL,
    last_seq      bigint NOT NULL,
    PRIMARY KEY (tenant, task_id)
);
CREATE INDEX IF NOT EXISTS tasks_by_tenant_created ON tasks (tenant, created_at DESC, task_id DESC);
CREATE INDEX IF NOT EXISTS tasks_by_tenant_status ON tasks (tenant, status, created_at DESC);

-- Every task event, for a task's history (GET /api/v1/tasks/{id}?events=true).
CREATE TABLE IF NOT EXISTS task_events (
    stream_seq  bigint PRIMARY KEY,
    tenant      text NOT NULL,
    task_id     text NOT NULL,
    event_id    text NOT NULL,
    type        text NOT NULL,
    data        jsonb NOT NULL,
    at          timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS task_events_by_task ON task_events (tenant, task_id, stream_seq);

-- Workflow runs and their steps (WORKFLOWS: workflow.run.*.*).
CREATE TABLE IF NOT EXISTS workflow_runs (
    tenant        text NOT NULL,
    run_id        text NOT NULL,
    workflow      text NOT NULL,
    version       integer NOT NULL DEFAULT 0,
    status        text NOT NULL,          -- running | completed | failed
    inputs        jsonb NOT NULL DEFAULT '{}'::jsonb,
    outputs       jsonb,
    reason        text,
    requested_by  text NOT NULL DEFAULT '',
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz,
    duration_ms   integer,
    updated_at    timestamptz NOT NULL,
    last_seq      bigint NOT NULL,
    PRIMARY KEY (tenant, run_id)
);
CREATE INDEX IF NOT EXISTS workflow_runs_by_workflow ON workflow_runs (tenant, workflow, started_at DESC);

CREATE TABLE IF NOT EXISTS workflow_steps (
    tenant       text NOT NULL,
    run_id       text NOT NULL,
    step         text NOT NULL,
    status       text NOT NULL,           -- running | completed | failed | retrying
    attempt      integer NOT NULL DEFAULT 1,
    output       jsonb,
    reason       text,
    started_at   timestamptz,
    finished_at  timestamptz,
    duration_ms  integer,
    last_seq     bigint NOT NULL,
    PRIMARY KEY (tenant, run_id, step)
);

-- Outgoing replies and callbacks (DELIVERIES: delivery.*.*.*).
CREATE TABLE IF NOT EXISTS deliveries (
    reply_id            text NOT NULL,
    chunk_index         integer NOT NULL,
    tenant              text NOT NULL,
    platform            text NOT NULL,
    app                 text NOT NULL DEFAULT '',
    chat_id             text NOT NULL DEFAULT '',
    status              text NOT NULL,    -- delivered | failed | ambiguous
    reason              text,
    code                text,
    attempts            integer NOT NULL DEFAULT 1,
    platform_message_id text,
    at                  timestamptz NOT NULL,
    last_seq            bigint NOT NULL,
    PRIMARY KEY (reply_id, chunk_index)
);

CREATE TABLE IF NOT EXISTS callback_deliveries (
    tenant           text NOT NULL,
    subscription_id  text NOT NULL,
    event_id         text NOT NULL,
    event_type       text NOT NULL,
    status           text NOT NULL,       -- delivered | failed
    status_code      integer,
    reason           text,
    attempts         integer NOT NULL DEFAULT 1,
    at               timestamptz NOT NULL,
    last_seq         bigint NOT NULL,
    PRIMARY KEY (tenant, subscription_id, event_id)
);

-- Security-relevant actions (AUDIT: audit.*.*).
CREATE TABLE IF NOT EXISTS audit (
    stream_seq  bigint PRIMARY KEY,
    tenant      text NOT NULL,
    kind        text NOT NULL,
    actor       text NOT NULL DEFAULT '',
    action      text NOT NULL DEFAULT '',
    outcome     text NOT NULL DEFAULT '',
    data        jsonb NOT NULL,
    at          timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_tenant ON audit (tenant, at DESC);

-- Definitions mirrored from their KV buckets and the SCHEDULES stream (the bus stays the
-- source of truth; these serve SQL reporting and joins).
CREATE TABLE IF NOT EXISTS schedules (
    tenant       text NOT NULL,
    schedule_id  text NOT NULL,
    spec         text NOT NULL,           -- cron or @every
    time_zone    text,
    template     jsonb NOT NULL,
    deleted      boolean NOT NULL DEFAULT false,
    updated_at   timestamptz NOT NULL,
    last_seq     bigint NOT NULL,
    PRIMARY KEY (tenant, schedule_id)
);

CREATE TABLE IF NOT EXISTS triggers (
    tenant      text NOT NULL,
    trigger_id  text NOT NULL,
    definition  jsonb NOT NULL,
    deleted     boolean NOT NULL DEFAULT false,
    revision    bigint NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant, trigger_id)
);

CREATE TABLE IF NOT EXISTS subscriptions (
    tenant           text NOT NULL,
    subscription_id  text NOT NULL,
    definition       jsonb NOT NULL,
    deleted          boolean NOT NULL DEFAULT false,
    revision         bigint NOT NULL,
    updated_at       timestamptz NOT NULL,
    PRIMARY KEY (tenant, subscription_id)
);
