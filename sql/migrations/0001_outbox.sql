-- outbox-relay migration 0001: the outbox schema.
-- Idempotent and safe to run from many pods at once: the advisory lock serializes concurrent runs and
-- every statement tolerates an earlier run. A DBA may apply it with `psql -v ON_ERROR_STOP=1 -f`.
BEGIN;
SELECT pg_advisory_xact_lock(7340010001);

CREATE SCHEMA IF NOT EXISTS outbox;

CREATE TABLE IF NOT EXISTS outbox.schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS outbox.events (
    -- Writers set these four columns.
    topic            text        NOT NULL,
    key              text,
    payload          bytea       NOT NULL,
    headers          jsonb       NOT NULL DEFAULT '{}',
    -- Delivery state, owned by the relay.
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id       uuid        NOT NULL DEFAULT gen_random_uuid(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- Not published before this time; the relay moves it forward after a failed attempt.
    available_at     timestamptz NOT NULL DEFAULT now(),
    attempts         integer     NOT NULL DEFAULT 0,
    last_error       text,
    delivered_at     timestamptz,
    dead_lettered_at timestamptz
);

-- The hot path: undelivered events in insertion order. Delivered and dead-lettered rows leave it,
-- so it stays as small as the backlog.
CREATE INDEX IF NOT EXISTS events_pending_idx ON outbox.events (id)
    WHERE delivered_at IS NULL AND dead_lettered_at IS NULL;

-- Events held back to a later time (retries, scheduled events). They block later events of their key.
-- An ordinary insert (available_at = created_at) does not enter this index, so it costs writers nothing.
CREATE INDEX IF NOT EXISTS events_deferred_idx ON outbox.events (key, id)
    WHERE delivered_at IS NULL AND dead_lettered_at IS NULL AND available_at > created_at;

CREATE INDEX IF NOT EXISTS events_dead_lettered_idx ON outbox.events (dead_lettered_at)
    WHERE dead_lettered_at IS NOT NULL;

CREATE OR REPLACE VIEW outbox.pending AS
    SELECT id, topic, key, payload, headers, message_id, created_at, available_at, attempts, last_error
    FROM outbox.events
    WHERE delivered_at IS NULL AND dead_lettered_at IS NULL;

CREATE OR REPLACE VIEW outbox.dead_letters AS
    SELECT id, topic, key, payload, headers, message_id, created_at, attempts, last_error, dead_lettered_at
    FROM outbox.events
    WHERE dead_lettered_at IS NOT NULL;

CREATE OR REPLACE FUNCTION outbox.enqueue(
    p_topic text, p_key text, p_payload bytea, p_headers jsonb DEFAULT '{}'
) RETURNS bigint LANGUAGE sql AS $$
    INSERT INTO outbox.events (topic, key, payload, headers)
    VALUES (p_topic, p_key, p_payload, coalesce(p_headers, '{}'))
    RETURNING id
$$;

CREATE OR REPLACE FUNCTION outbox.enqueue(
    p_topic text, p_key text, p_payload jsonb, p_headers jsonb DEFAULT '{}'
) RETURNS bigint LANGUAGE sql AS $$
    SELECT outbox.enqueue(p_topic, p_key, convert_to(p_payload::text, 'UTF8'), p_headers)
$$;

-- Wakes the relay right after a commit. One notification per statement, and PostgreSQL folds equal
-- notifications of one transaction. High-volume writers may turn it off (the relay also polls):
--   ALTER TABLE outbox.events DISABLE TRIGGER events_notify;
CREATE OR REPLACE FUNCTION outbox.notify_relay() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox_events', '');
    RETURN NULL;
END
$$;

-- Created once, so that a later run of this file does not re-enable a trigger a DBA turned off.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                   WHERE tgname = 'events_notify' AND tgrelid = 'outbox.events'::regclass) THEN
        CREATE TRIGGER events_notify AFTER INSERT ON outbox.events
            FOR EACH STATEMENT EXECUTE FUNCTION outbox.notify_relay();
    END IF;
END
$$;

INSERT INTO outbox.schema_migrations (version, name) VALUES (1, 'outbox') ON CONFLICT DO NOTHING;
COMMIT;
