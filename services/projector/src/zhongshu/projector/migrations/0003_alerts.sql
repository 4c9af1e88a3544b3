-- Alerts and who did what with them (ALERTS: alert.<level>.<source> and alerting.state.<key>).
-- `alerts`: one row per alert key and episode, as its latest AlertStateChanged says;
-- `alert_events`: every raise and every lifecycle change, keyed by its stream sequence.

CREATE TABLE IF NOT EXISTS alerts (
    key             text NOT NULL,
    episode         integer NOT NULL,
    state           text NOT NULL,
    level           text NOT NULL,
    source          text NOT NULL,
    title           text NOT NULL,
    detail          text NOT NULL DEFAULT '',
    tenant          text,
    labels          jsonb NOT NULL DEFAULT '{}'::jsonb,
    raised_at       timestamptz,
    occurrences     integer NOT NULL DEFAULT 1,
    silenced_until  timestamptz,
    acknowledged_by text,
    acknowledged_at timestamptz,
    resolved_by     text,
    resolved_at     timestamptz,
    reason          text NOT NULL DEFAULT '',
    updated_at      timestamptz NOT NULL,
    last_seq        bigint NOT NULL,
    PRIMARY KEY (key, episode)
);
CREATE INDEX IF NOT EXISTS alerts_open ON alerts (level, updated_at DESC)
    WHERE state <> 'resolved';

CREATE TABLE IF NOT EXISTS alert_events (
    stream_seq      bigint PRIMARY KEY,
    key             text NOT NULL,
    episode         integer,
    kind            text NOT NULL,  -- raise (an AlertRaised) or change (an AlertStateChanged)
    state           text,           -- the state a change moved to
    level           text NOT NULL,
    source          text NOT NULL,
    title           text NOT NULL,
    actor_id        text,
    actor_name      text,
    actor_platform  text,
    actor_app       text,
    reason          text NOT NULL DEFAULT '',
    data            jsonb NOT NULL,
    at              timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_events_by_key ON alert_events (key, stream_seq);
CREATE INDEX IF NOT EXISTS alert_events_at ON alert_events (at);
