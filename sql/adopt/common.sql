-- outbox-relay adoption: what every adopted layout needs. `outbox-relay migrate` applies it before
-- sql/adopt/<framework>.sql when OUTBOX_ADOPT is set. Idempotent and safe from many pods.
BEGIN;
SELECT pg_advisory_xact_lock(7340010001);

-- The type of column `p_column` of `p_table`, NULL when it has none.
CREATE OR REPLACE FUNCTION outbox.adopt_column_type(p_table regclass, p_column text)
RETURNS regtype LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT atttypid::regtype FROM pg_attribute
    WHERE attrelid = p_table AND attname = p_column AND attnum > 0 AND NOT attisdropped
$$;

-- The table's regclass, or an error that names the setting.
CREATE OR REPLACE FUNCTION outbox.adopt_table(p_table text)
RETURNS regclass LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    found regclass := to_regclass(p_table);
BEGIN
    IF found IS NULL THEN
        RAISE EXCEPTION 'outbox-relay: OUTBOX_ADOPT_TABLE %: no such table (create it first: the application''s migrations do)', p_table;
    END IF;
    IF NOT has_table_privilege(found, 'TRIGGER') THEN
        RAISE EXCEPTION 'outbox-relay: % may not create triggers on %', current_user, found
            USING HINT = format('As its owner run: GRANT TRIGGER ON %s TO %I;', found, current_user);
    END IF;
    RETURN found;
END
$$;

COMMIT;
