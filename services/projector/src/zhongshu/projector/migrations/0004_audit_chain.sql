-- The audit trail's hash chain (zhongshu.runtime.auditchain; docs/operations/audit.md): each
-- record carries its place in its tenant's chain, the hash of the record before it and its own.
-- Rows written before this migration have none; `zhongshu projections rebuild --stream AUDIT`
-- chains them from the stream.

ALTER TABLE audit ADD COLUMN IF NOT EXISTS event_id text;
ALTER TABLE audit ADD COLUMN IF NOT EXISTS pos bigint;
ALTER TABLE audit ADD COLUMN IF NOT EXISTS prev_hash text;
ALTER TABLE audit ADD COLUMN IF NOT EXISTS hash text;

-- The same event (a producer's retry after the stream's duplicate window) is chained once.
CREATE UNIQUE INDEX IF NOT EXISTS audit_event_id ON audit (event_id);
CREATE UNIQUE INDEX IF NOT EXISTS audit_chain_pos ON audit (tenant, pos);

-- Per tenant: the chain's last position and hash (its head, locked while a batch extends it) and
-- where the stored chain starts once retention deleted its oldest records (its anchor).
CREATE TABLE IF NOT EXISTS audit_chain (
    tenant       text PRIMARY KEY,
    pos          bigint NOT NULL DEFAULT 0,
    hash         text NOT NULL DEFAULT '0000000000000000000000000000000000000000000000000000000000000000',
    anchor_pos   bigint NOT NULL DEFAULT 0,
    anchor_hash  text NOT NULL DEFAULT '0000000000000000000000000000000000000000000000000000000000000000'
);
