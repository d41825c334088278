-- outbox-relay adoption: MassTransit's Entity Framework Core transactional outbox (`OutboxMessage`,
-- `OutboxState`, as EF Core creates them for Npgsql). `outbox-relay migrate` applies this file
-- (after common.sql) when OUTBOX_ADOPT=masstransit, then calls
-- outbox.adopt_masstransit(OUTBOX_ADOPT_TABLE). A DBA may do the same with psql:
--   psql -v ON_ERROR_STOP=1 -f sql/adopt/common.sql -f sql/adopt/masstransit.sql
--   psql -c "SELECT outbox.adopt_masstransit('public.\"OutboxMessage\"')"
-- The capture: a trigger moves each bus outbox message (OutboxId set) the application inserts
-- into outbox.events, in the application's transaction: it copies the rows, then deletes them; at
-- commit, a deferred trigger deletes the OutboxState rows left without messages. MassTransit's
-- own delivery service would remove both after delivery; here outbox.events holds the message
-- until the broker acknowledged it, and the relay's retention deletes it after. Messages of the
-- consumer outbox (InboxMessageId set, OutboxId NULL) are left to MassTransit, which delivers
-- them itself when the consumer completes.
-- Idempotent and safe from many pods: the advisory lock of the migrations serializes runs.
BEGIN;
SELECT pg_advisory_xact_lock(7340010001);

-- The destination a MassTransit address names: its last path segment, without the query
-- (`rabbitmq://host/vhost/Contracts:OrderCreated?type=fanout` -> `Contracts:OrderCreated`), or
-- the name of a short address (`exchange:Contracts:OrderCreated`, `queue:orders` -> `orders`).
-- On RabbitMQ that is the exchange: MassTransit publishes to the exchange named after the message
-- type and sends to the exchange named like the receiving queue. Empty without an address (the
-- relay dead-letters an event without a topic).
-- PL/pgSQL, not SQL: the capture calls these for every row, and PL/pgSQL keeps their plans for
-- the session, where a SQL function that PostgreSQL cannot inline is planned at every call (4 times
-- the capture's cost, measured).
CREATE OR REPLACE FUNCTION outbox.masstransit_destination(p_address text)
RETURNS text LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    address text := rtrim(split_part(p_address, '?', 1), '/');
BEGIN
    IF address IS NULL THEN
        RETURN '';
    ELSIF position('/' IN address) > 0 THEN
        RETURN regexp_replace(address, '^.*/', '');
    END IF;
    RETURN regexp_replace(address, '^(exchange|queue|topic):', '');
END
$$;

-- The headers of a message: MassTransit's transport headers (the `Headers` JSON object, values
-- as text) and `content-type` = `ContentType`, which the RabbitMQ sink sends as the
-- content_type property.
CREATE OR REPLACE FUNCTION outbox.masstransit_headers(p_headers text, p_content_type text)
RETURNS jsonb LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    transport jsonb;
BEGIN
    IF left(ltrim(p_headers), 1) = '{' AND p_headers !~ '^\s*\{\s*\}\s*$' THEN
        SELECT jsonb_object_agg(h.key, h.value #>> '{}') INTO transport
        FROM jsonb_each(p_headers::jsonb) AS h
        WHERE jsonb_typeof(h.value) <> 'null';
    END IF;
    RETURN coalesce(transport, '{}') || jsonb_build_object('content-type', p_content_type);
END
$$;

-- Installs the capture on `p_table` (OutboxMessage) and the cleanup on OutboxState of the same
-- schema; returns what it did, for `migrate` to print.
CREATE OR REPLACE FUNCTION outbox.adopt_masstransit(p_table text)
RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target  regclass := outbox.adopt_table(p_table);
    state   regclass;
    capture text := 'adopt_capture_' || left(md5(target::text), 12);
    forget  text := 'adopt_forget_' || left(md5(target::text), 12);
    missing text;
    done    text[] := '{}';
BEGIN
    PERFORM pg_advisory_xact_lock(7340010001);
    SELECT string_agg(c, ', ') INTO missing
    FROM unnest(ARRAY['SequenceNumber', 'OutboxId', 'MessageId', 'ContentType', 'Body', 'Headers',
                      'DestinationAddress']) AS c
    WHERE outbox.adopt_column_type(target, c) IS NULL;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'outbox-relay: % is not MassTransit''s OutboxMessage table: it has no column %', target, missing;
    END IF;
    SELECT to_regclass(format('%I.%I', n.nspname, 'OutboxState')) INTO state
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = target;
    IF state IS NULL THEN
        RAISE EXCEPTION 'outbox-relay: no table "OutboxState" beside %: MassTransit''s EF Core outbox creates both', target;
    END IF;
    IF NOT has_table_privilege(target, 'SELECT, DELETE') OR NOT has_table_privilege(state, 'DELETE, TRIGGER') THEN
        RAISE EXCEPTION 'outbox-relay: % may not remove delivered MassTransit rows', current_user
            USING HINT = format('As their owner run: GRANT SELECT, DELETE, TRIGGER ON %s TO %I; GRANT DELETE, TRIGGER ON %s TO %I;',
                                target, current_user, state, current_user);
    END IF;
    -- Owned by the role running migrate and run with its rights: the application's role needs
    -- no privilege on the outbox schema. Once per statement, over the statement's new rows (a
    -- row trigger running the copy and the delete as statements of their own cost 3 times as
    -- much per row, measured); in SequenceNumber order, so that each OutboxId's messages keep it.
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION outbox.%I() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
        BEGIN
            INSERT INTO outbox.events (topic, key, payload, headers, message_id)
            SELECT outbox.masstransit_destination(m."DestinationAddress"), m."OutboxId"::text,
                   convert_to(m."Body", 'UTF8'),
                   outbox.masstransit_headers(m."Headers", m."ContentType"), m."MessageId"
            FROM new_messages m
            WHERE m."OutboxId" IS NOT NULL
            ORDER BY m."SequenceNumber";
            IF FOUND THEN
                DELETE FROM %s WHERE "SequenceNumber" IN
                    (SELECT "SequenceNumber" FROM new_messages WHERE "OutboxId" IS NOT NULL);
            END IF;
            RETURN NULL;
        END
        $body$ $f$, capture, target);
    -- At commit: every message of the outbox was moved, so its state row goes too.
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION outbox.%I() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
        BEGIN
            DELETE FROM %s WHERE "OutboxId" = NEW."OutboxId"
                AND NOT EXISTS (SELECT 1 FROM %s WHERE "OutboxId" = NEW."OutboxId");
            RETURN NULL;
        END
        $body$ $f$, forget, state, target);
    EXECUTE format('REVOKE ALL ON FUNCTION outbox.%I() FROM PUBLIC', capture);
    EXECUTE format('REVOKE ALL ON FUNCTION outbox.%I() FROM PUBLIC', forget);
    EXECUTE format('COMMENT ON FUNCTION outbox.%I() IS %L', capture,
                   format('outbox-relay adoption (masstransit): moves bus outbox messages of %s into outbox.events', target));
    -- Created once: a later run only replaces the functions, and so takes no lock on the tables.
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = target AND tgname = 'outbox_adopt_capture') THEN
        EXECUTE format('CREATE TRIGGER outbox_adopt_capture AFTER INSERT ON %s '
                       'REFERENCING NEW TABLE AS new_messages FOR EACH STATEMENT EXECUTE FUNCTION outbox.%I()',
                       target, capture);
        done := done || format('capture trigger installed on %s', target);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = state AND tgname = 'outbox_adopt_forget') THEN
        EXECUTE format('CREATE CONSTRAINT TRIGGER outbox_adopt_forget AFTER INSERT ON %s '
                       'DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION outbox.%I()', state, forget);
        done := done || format('cleanup trigger installed on %s', state);
    END IF;
    IF cardinality(done) = 0 THEN
        RETURN format('capture trigger on %s and cleanup trigger on %s up to date', target, state);
    END IF;
    RETURN array_to_string(done, ', ');
END
$$;

REVOKE ALL ON FUNCTION outbox.adopt_masstransit(text) FROM PUBLIC;
COMMIT;
