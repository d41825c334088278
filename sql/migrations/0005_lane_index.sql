-- outbox-relay migration 0005: a replica reads only its own lanes' events, and the claim's
-- lookups of in-progress transactions stay lookups.
-- The pending index gets each event's lane as a second column, so a claim that owns a run of
-- lanes (lanes 16-31, say) skips the other lanes' entries inside the index instead of fetching
-- each row and hashing its key: with 4 replicas, each claim of 500 events read ~2,000 rows and
-- computed ~2,000 md5s. `in_lanes` is the one test of lane membership for every query.
-- Idempotent; a DBA may apply it with `psql -v ON_ERROR_STOP=1 -f`. On an existing large outbox
-- CREATE INDEX blocks writers while it reads the table: run it at a quiet time, or build the same
-- index first with CREATE INDEX CONCURRENTLY under this name.
BEGIN;
SELECT pg_advisory_xact_lock(7340010001);

CREATE INDEX IF NOT EXISTS events_pending_lane_idx ON outbox.events (id, outbox.lane_of(key, id))
    WHERE delivered_at IS NULL AND dead_lettered_at IS NULL;
-- The new index serves every query the old one did (its first column is the same).
DROP INDEX IF EXISTS outbox.events_pending_idx;

-- Whether an event belongs to `lanes` (sorted ascending; NULL: every lane). The range test
-- matches the index's second column, so PostgreSQL checks it on index entries; the exact test
-- runs only when the lanes are not one unbroken run (a replica owns a run, see README,
-- "Scale-out: lanes"). A plain SQL function: PostgreSQL inlines it into each query.
CREATE OR REPLACE FUNCTION outbox.in_lanes(key text, id bigint, lanes integer[]) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT lanes IS NULL
        OR (outbox.lane_of(key, id) BETWEEN lanes[1] AND lanes[cardinality(lanes)]
            AND (lanes[cardinality(lanes)] - lanes[1] < cardinality(lanes)
                 OR outbox.lane_of(key, id) = ANY(lanes)))
$$;

-- A claim looks up each transaction its snapshot saw in progress by txid. After one transaction
-- wrote many events (a backfill), ANALYZE finds one txid on every row, and the planner turned
-- each such lookup into a read of the whole table: 330 ms per claim on a 1M outbox, for as long
-- as any other transaction was open when a claim ran. Writers' transactions hold a few events
-- each, so the number of distinct txids is fixed at half the rows; ANALYZE applies it (it takes
-- no lock that blocks writers, and reads a sample of the table).
ALTER TABLE outbox.events ALTER COLUMN txid SET (n_distinct = -0.5);
ANALYZE outbox.events (txid);

INSERT INTO outbox.schema_migrations (version, name) VALUES (5, 'lane_index') ON CONFLICT DO NOTHING;
COMMIT;
