-- outbox-relay migration 0004: lanes, so that every replica relays a share of the outbox.
-- Each event belongs to one of 64 lanes: events with a key to the lane of their key (so a key's
-- events share a lane and its order), events without a key spread by id. A replica owns a lane by
-- holding a session advisory lock on it; PostgreSQL releases the lock when the session ends.
-- The lane count is part of the outbox's format: changing it moves keys between lanes, so it is
-- fixed here, not a setting. Only functions: no table rewrite, nothing for writers to change.
-- Idempotent; a DBA may apply it with `psql -v ON_ERROR_STOP=1 -f`.
BEGIN;
SELECT pg_advisory_xact_lock(7340010001);

-- The number of lanes.
CREATE OR REPLACE FUNCTION outbox.lane_count() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 64 $$;

-- An event's lane: the first 32 bits of md5(key) modulo 64, or its id modulo 64 without a key.
-- md5, not PostgreSQL's internal hash: the same in every version and easy to compute anywhere.
CREATE OR REPLACE FUNCTION outbox.lane_of(key text, id bigint) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN key IS NULL THEN (id % 64)::integer
                ELSE (('x' || left(md5(key), 8))::bit(32)::bigint % 64)::integer END
$$;

-- The lanes this session owns: the advisory locks 7340020000 + lane it holds. Claims and marks
-- check it, so a replica that lost a lane (its session ended) can neither claim nor mark its events.
CREATE OR REPLACE FUNCTION outbox.owned_lanes() RETURNS integer[]
LANGUAGE sql STABLE AS $$
    SELECT coalesce(array_agg(lane ORDER BY lane), '{}') FROM (
        SELECT (l.classid::bigint * 4294967296 + l.objid::bigint - 7340020000)::integer AS lane
        FROM pg_locks l
        WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
          AND l.pid = pg_backend_pid()
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    ) held
    WHERE lane BETWEEN 0 AND 63
$$;

INSERT INTO outbox.schema_migrations (version, name) VALUES (4, 'lanes') ON CONFLICT DO NOTHING;
COMMIT;
