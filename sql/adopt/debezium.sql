-- outbox-relay adoption: Debezium's outbox table (`id uuid, aggregatetype, aggregateid, type,
-- payload`, as Debezium's outbox event router reads it). `outbox-relay migrate` applies this file
-- (after common.sql) when OUTBOX_ADOPT=debezium, then calls outbox.adopt_debezium(OUTBOX_ADOPT_TABLE,
-- OUTBOX_ADOPT_TOPIC_TEMPLATE). A DBA may do the same with psql:
--   psql -v ON_ERROR_STOP=1 -f sql/adopt/common.sql -f sql/adopt/debezium.sql
--   psql -c "SELECT outbox.adopt_debezium('public.outboxevent', 'outbox.event.{aggregatetype}')"
-- The capture: a trigger copies each row the application inserts into outbox.events, in the
-- application's transaction, so the row is relayed with every guarantee of outbox.events, also
-- when the application deletes it again in the same transaction (Debezium Quarkus's default).
-- Idempotent and safe from many pods: the advisory lock of the migrations serializes runs.
BEGIN;
SELECT pg_advisory_xact_lock(7340010001);

-- The SQL expression of a topic template: `{column}` replaced by that column of the new row `r`
-- (empty when NULL), the rest literal. Refuses a column the table does not have.
CREATE OR REPLACE FUNCTION outbox.adopt_topic_expression(p_table regclass, p_template text)
RETURNS text LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    literals text[] := regexp_split_to_array(p_template, '\{[^{}]*\}');
    columns  text[] := ARRAY(SELECT m[1] FROM regexp_matches(p_template, '\{([^{}]*)\}', 'g') AS m);
    expr     text   := quote_literal(literals[1]);
BEGIN
    FOR i IN 1 .. coalesce(cardinality(columns), 0) LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_attribute
                       WHERE attrelid = p_table AND attname = columns[i] AND attnum > 0 AND NOT attisdropped) THEN
            RAISE EXCEPTION 'outbox-relay: the topic template % names column "%", which table % does not have',
                p_template, columns[i], p_table
                USING HINT = 'Set OUTBOX_ADOPT_TOPIC_TEMPLATE to fixed text and {column} of that table.';
        END IF;
        expr := expr || format(' || coalesce(r.%I::text, %L) || %L', columns[i], '', literals[i + 1]);
    END LOOP;
    RETURN expr;
END
$$;

-- Installs the capture on `p_table`; returns what it did, for `migrate` to print.
CREATE OR REPLACE FUNCTION outbox.adopt_debezium(p_table text, p_topic_template text)
RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target   regclass := outbox.adopt_table(p_table);
    capture  text := 'adopt_capture_' || left(md5(target::text), 12);
    payload  text;
    message  text;
    missing  text;
BEGIN
    PERFORM pg_advisory_xact_lock(7340010001);
    SELECT string_agg(c, ', ') INTO missing
    FROM unnest(ARRAY['id', 'aggregatetype', 'aggregateid', 'type', 'payload']) AS c
    WHERE outbox.adopt_column_type(target, c) IS NULL;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'outbox-relay: % is not a Debezium outbox table: it has no column %', target, missing;
    END IF;
    -- bytea as it is; json, jsonb and text as their UTF-8 text. Never NULL: a failing insert
    -- would fail the application's transaction, an empty payload is delivered.
    payload := CASE WHEN outbox.adopt_column_type(target, 'payload') = 'bytea'::regtype
                    THEN 'coalesce(r.payload, ''''::bytea)'
                    ELSE 'convert_to(coalesce(r.payload::text, ''''), ''UTF8'')' END;
    -- The row's id is the message id when it is a uuid (Debezium's layout); otherwise the
    -- message id is a new one and the header `id` still carries the row's id.
    message := CASE WHEN outbox.adopt_column_type(target, 'id') = 'uuid'::regtype
                    THEN 'coalesce(r.id, gen_random_uuid())' ELSE 'gen_random_uuid()' END;
    -- Owned by the role running migrate and run with its rights: the application's role needs
    -- no privilege on the outbox schema. Once per statement, over the statement's new rows in
    -- the order they were inserted (a row trigger running the copy as a statement of its own
    -- cost 3 times as much per row, measured).
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION outbox.%I() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
        BEGIN
            INSERT INTO outbox.events (topic, key, payload, headers, message_id)
            SELECT %s, r.aggregateid::text, %s,
                   jsonb_strip_nulls(jsonb_build_object('id', r.id::text, 'type', r.type::text)), %s
            FROM new_rows r;
            RETURN NULL;
        END
        $body$ $f$, capture, outbox.adopt_topic_expression(target, p_topic_template), payload, message);
    EXECUTE format('REVOKE ALL ON FUNCTION outbox.%I() FROM PUBLIC', capture);
    EXECUTE format('COMMENT ON FUNCTION outbox.%I() IS %L', capture,
                   format('outbox-relay adoption (debezium): copies rows of %s into outbox.events', target));
    -- Created once: a later run only replaces the function, and so takes no lock on the table.
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = target AND tgname = 'outbox_adopt_capture') THEN
        EXECUTE format('CREATE TRIGGER outbox_adopt_capture AFTER INSERT ON %s '
                       'REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION outbox.%I()',
                       target, capture);
        RETURN format('capture trigger installed on %s (topic %s)', target, p_topic_template);
    END IF;
    RETURN format('capture trigger on %s up to date (topic %s)', target, p_topic_template);
END
$$;

REVOKE ALL ON FUNCTION outbox.adopt_debezium(text, text) FROM PUBLIC;
COMMIT;
