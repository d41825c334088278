-- outbox-relay migration 0003: group roles for least privilege.
--   outbox_writer: adds events (INSERT of the writer columns, outbox.enqueue), nothing else.
--   outbox_relay:  what `run`, `check`, `status` and `dead-letters` need; owns nothing.
-- A DBA grants them to login roles: GRANT outbox_writer TO app_user; GRANT outbox_relay TO relay_user;
-- Idempotent and safe to run from many pods at once, also from many databases of one cluster
-- (roles are cluster-wide, the advisory lock is per database). A DBA may apply it with
-- `psql -v ON_ERROR_STOP=1 -f`, e.g. again after creating the roles when `migrate` could not.
BEGIN;
SELECT pg_advisory_xact_lock(7340010001);

-- Creating a role needs CREATEROLE. Without it, the roles are left to a DBA (a warning says how) and
-- the grants below are skipped; applying this file again later grants them.
DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['outbox_writer', 'outbox_relay'] LOOP
        CONTINUE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name);
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
        EXCEPTION
            -- Another database's migrate created it first (the loser of a concurrent CREATE ROLE
            -- gets unique_violation, a later one duplicate_object): it exists, which is all we need.
            WHEN duplicate_object OR unique_violation THEN NULL;
            WHEN insufficient_privilege THEN
                RAISE WARNING 'outbox-relay: role % does not exist and % may not create roles', role_name, current_user
                    USING HINT = format('As a role with CREATEROLE run: CREATE ROLE %I NOLOGIN; then apply '
                                        'sql/migrations/0003_roles.sql again (psql -v ON_ERROR_STOP=1 -f).', role_name);
        END;
    END LOOP;
END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_writer') THEN
        -- outbox.enqueue inserts with its owner's rights: a writer has no SELECT, which
        -- INSERT ... RETURNING id would need. So only roles granted EXECUTE may call it, and a fixed
        -- search_path keeps callers from substituting objects. Without the role, enqueue stays as it
        -- was, so callers relying on their own grants keep working until a DBA creates it.
        ALTER FUNCTION outbox.enqueue(text, text, bytea, jsonb)
            SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
        ALTER FUNCTION outbox.enqueue(text, text, jsonb, jsonb)
            SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
        REVOKE ALL ON FUNCTION outbox.enqueue(text, text, bytea, jsonb) FROM PUBLIC;
        REVOKE ALL ON FUNCTION outbox.enqueue(text, text, jsonb, jsonb) FROM PUBLIC;
        GRANT USAGE ON SCHEMA outbox TO outbox_writer;
        -- The writer columns, and available_at to schedule an event; every other column takes its
        -- default. No SELECT, UPDATE or DELETE.
        GRANT INSERT (topic, key, payload, headers, available_at) ON outbox.events TO outbox_writer;
        GRANT EXECUTE ON FUNCTION outbox.enqueue(text, text, bytea, jsonb) TO outbox_writer;
        GRANT EXECUTE ON FUNCTION outbox.enqueue(text, text, jsonb, jsonb) TO outbox_writer;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_relay') THEN
        GRANT USAGE ON SCHEMA outbox TO outbox_relay;
        -- Table-level, so columns added by later migrations are covered. SELECT: claim, status;
        -- UPDATE: mark, record failures, dead-letters retry; DELETE: retention, dead-letters discard.
        GRANT SELECT, UPDATE, DELETE ON outbox.events TO outbox_relay;
        GRANT SELECT ON outbox.pending, outbox.dead_letters, outbox.schema_migrations TO outbox_relay;
    END IF;
END
$$;

INSERT INTO outbox.schema_migrations (version, name) VALUES (3, 'roles') ON CONFLICT DO NOTHING;
COMMIT;
