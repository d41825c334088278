-- outbox-relay migration 0002: a claim whose cost does not grow with history.
-- Every row remembers the transaction that wrote it (`txid`), so the relay can read new events
-- from a floor id on and still find a transaction that commits late below that floor: its id is
-- in the snapshot's in-progress list when the floor passes it. Deferred rows (retries, schedules,
-- events parked behind an earlier event of their key) get an index by due time, so a claim reads
-- only those that are due, however many are scheduled.
-- Idempotent; a DBA may apply it with `psql -v ON_ERROR_STOP=1 -f`. On an existing large outbox the
-- two CREATE INDEX statements block writers while they build: run it at a quiet time, or build
-- the same indexes first with CREATE INDEX CONCURRENTLY under these names.
BEGIN;
SELECT pg_advisory_xact_lock(7340010001);

-- Nullable and without a table rewrite: rows written before this migration have no txid and are
-- all committed, so the floor scan finds them.
ALTER TABLE outbox.events ADD COLUMN IF NOT EXISTS txid xid8;
ALTER TABLE outbox.events ALTER COLUMN txid SET DEFAULT pg_current_xact_id();

CREATE INDEX IF NOT EXISTS events_pending_txid_idx ON outbox.events (txid)
    WHERE delivered_at IS NULL AND dead_lettered_at IS NULL;

CREATE INDEX IF NOT EXISTS events_deferred_due_idx ON outbox.events (available_at)
    WHERE delivered_at IS NULL AND dead_lettered_at IS NULL AND available_at > created_at;

INSERT INTO outbox.schema_migrations (version, name) VALUES (2, 'claim_cursor') ON CONFLICT DO NOTHING;
COMMIT;
