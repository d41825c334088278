-- outbox-relay adoption: MassTransit's Entity Framework Core transactional outbox (`OutboxMessage`,
-- `OutboxState`, as EF Core creates them for Npgsql). `outbox-relay migrate` applies this file
-- (after common.sql) when OUTBOX_ADOPT=masstransit, then calls
-- outbox.adopt_masstransit(OUTBOX_ADOPT_TABLE). A DBA may do the same with psql:
--   psql -v ON_ERROR_STOP=1 -f sql/adopt/common.sql -f sql/adopt/masstransit.sql
--   psql -c "SELECT outbox.adopt_masstransit('public.\"OutboxMessage\"')"
-- The capture: a trigger copies each bus outbox message (OutboxId set) the application inserts
-- into outbox.events, in the application's transaction. The removal: triggers on outbox.events
-- delete the message's OutboxMessage row in the transaction that records its delivery (the
-- broker acknowledged it), and the OutboxState row once its outbox has no message left, as
-- MassTransit's own delivery service does. A dead letter keeps its rows until it is delivered
-- after a retry, or discarded. The guard: a trigger records, without failing anyone, who else
-- deletes bus outbox messages (MassTransit's delivery service left running); `run` refuses to
-- relay while such evidence exists. Messages of the consumer outbox (InboxMessageId set, OutboxId
-- NULL) are left to MassTransit, which delivers them itself when the consumer completes.
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

-- Evidence that someone other than the relay deletes bus outbox messages: MassTransit's delivery
-- service left running beside the relay (two deliverers: duplicates, out of order). One row per
-- table and deleter; `run` refuses to relay while a row exists (the relay's role reads it).
CREATE TABLE IF NOT EXISTS outbox.adoption_conflicts (
    table_name       text        NOT NULL,
    usename          text        NOT NULL,
    application_name text        NOT NULL,
    client_addr      text        NOT NULL,
    detected_at      timestamptz NOT NULL DEFAULT now(),
    last_seen        timestamptz NOT NULL DEFAULT now(),
    rows             bigint      NOT NULL,
    PRIMARY KEY (table_name, usename, application_name, client_addr)
);

-- What `run` checks: the recorded deletes and, with p_states, the OutboxState rows MassTransit's
-- delivery service marked ("Delivered" or "LastSequenceNumber" set: nothing else writes them) in
-- every adopted schema. With the owner's rights: the relay's role cannot read MassTransit's tables.
CREATE OR REPLACE FUNCTION outbox.masstransit_conflicts(p_states boolean)
RETURNS TABLE (table_name text, evidence text, rows bigint, detected_at timestamptz,
               last_seen timestamptz, usename text, application_name text, client_addr text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    state regclass;
BEGIN
    RETURN QUERY
        SELECT c.table_name, 'deleted'::text, c.rows, c.detected_at, c.last_seen, c.usename,
               c.application_name, c.client_addr
        FROM outbox.adoption_conflicts c ORDER BY c.detected_at;
    IF NOT p_states THEN
        RETURN;
    END IF;
    FOR state IN
        SELECT to_regclass(format('%I.%I', n.nspname, 'OutboxState'))
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE t.tgname = 'outbox_adopt_conflict'
    LOOP
        CONTINUE WHEN state IS NULL;
        RETURN QUERY EXECUTE format(
            'SELECT %L::text, ''marked''::text, count(*), min(coalesce("Delivered", "Created")), '
            'max(coalesce("Delivered", "Created")), NULL::text, NULL::text, NULL::text FROM %s '
            'WHERE "Delivered" IS NOT NULL OR "LastSequenceNumber" IS NOT NULL HAVING count(*) > 0',
            state::text, state);
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION outbox.masstransit_conflicts(boolean) FROM PUBLIC;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_relay') THEN
        GRANT SELECT ON outbox.adoption_conflicts TO outbox_relay;
        GRANT EXECUTE ON FUNCTION outbox.masstransit_conflicts(boolean) TO outbox_relay;
    END IF;
END
$$;

-- Installs the capture on `p_table` (OutboxMessage), the removal after delivery (triggers on
-- outbox.events) and the guard on it; returns what it did, for `migrate` to print.
CREATE OR REPLACE FUNCTION outbox.adopt_masstransit(p_table text)
RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target   regclass := outbox.adopt_table(p_table);
    state    regclass;
    hash     text := left(md5(target::text), 12);
    capture  text := 'adopt_capture_' || hash;
    remove   text := 'adopt_remove_' || hash;
    conflict text := 'adopt_conflict_' || hash;
    enqueue  text := 'now()';
    missing  text;
    done     text[] := '{}';
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
    IF NOT has_table_privilege(target, 'SELECT, DELETE') OR NOT has_table_privilege(state, 'SELECT, DELETE') THEN
        RAISE EXCEPTION 'outbox-relay: % may not remove delivered MassTransit rows', current_user
            USING HINT = format('As their owner run: GRANT SELECT, DELETE, TRIGGER ON %s TO %I; GRANT SELECT, DELETE ON %s TO %I;',
                                target, current_user, state, current_user);
    END IF;
    -- A message MassTransit is to send later (a delayed send) waits until its EnqueueTime; the
    -- relay holds back the later events of its outbox behind it, as for any scheduled event.
    IF outbox.adopt_column_type(target, 'EnqueueTime') IS NOT NULL THEN
        enqueue := 'CASE WHEN m."EnqueueTime" > now() THEN m."EnqueueTime" ELSE now() END';
    END IF;
    -- Owned by the role running migrate and run with its rights: the application's role needs
    -- no privilege on the outbox schema. Once per statement, over the statement's new rows (a
    -- row trigger running the copy as a statement of its own cost 3 times as much per row,
    -- measured); in SequenceNumber order, so that each OutboxId's messages keep it. Only a copy:
    -- the rows stay until the broker acknowledged the message.
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION outbox.%I() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
        BEGIN
            INSERT INTO outbox.events (topic, key, payload, headers, message_id, available_at)
            SELECT outbox.masstransit_destination(m."DestinationAddress"), m."OutboxId"::text,
                   convert_to(m."Body", 'UTF8'),
                   outbox.masstransit_headers(m."Headers", m."ContentType"), m."MessageId", %s
            FROM new_messages m
            WHERE m."OutboxId" IS NOT NULL
            ORDER BY m."SequenceNumber";
            RETURN NULL;
        END
        $body$ $f$, capture, enqueue);
    -- The removal, in the statement that records a delivery (delivered_at set) or deletes an
    -- undelivered event (delivered and deleted at once with OUTBOX_RETENTION_SECS=0; a dead
    -- letter discarded). A MassTransit event is known by its key (the OutboxId, whose index leads
    -- MassTransit's (OutboxId, SequenceNumber) one) and message id; any other event matches no row.
    -- The flag tells the guard below that this delete is the relay's.
    -- Its statements go through the indexes: planned once for any batch (the plans are
    -- generic), a sequential scan of the application's table would cost every mark its size.
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION outbox.%I() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
        SET enable_seqscan = off AS $body$
        DECLARE
            outboxes uuid[];
            messages uuid[];
        BEGIN
            IF TG_OP = 'UPDATE' THEN
                -- Events delivered by this statement, and any other delivered one it touched:
                -- the relay updates no delivered event, and one updated again has no rows left.
                -- (Joining the old rows by id would be a nested loop: transition tables have no
                -- statistics.)
                SELECT array_agg(n.key::uuid), array_agg(n.message_id) INTO outboxes, messages
                FROM new_events n
                WHERE n.delivered_at IS NOT NULL
                  AND n.key ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';
            ELSE
                SELECT array_agg(o.key::uuid), array_agg(o.message_id) INTO outboxes, messages
                FROM old_events o
                WHERE o.delivered_at IS NULL
                  AND o.key ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';
            END IF;
            IF outboxes IS NULL THEN
                RETURN NULL;
            END IF;
            PERFORM set_config('outbox_relay.removing', 'on', true);
            -- The outboxes' messages through the (OutboxId, SequenceNumber) index, each outbox
            -- once, the delivered ones picked by MessageId (MassTransit draws a new one for every
            -- message). No join: its plan, made once for any batch, could read an outbox per
            -- message. So a statement reads the outboxes it delivered from: a few rows for
            -- MassTransit's usual outboxes, its size for a large one.
            DELETE FROM %2$s m
            WHERE m."OutboxId" = ANY(ARRAY(SELECT DISTINCT unnest(outboxes)))
              AND m."MessageId" = ANY(messages);
            PERFORM set_config('outbox_relay.removing', '', true);
            -- An OutboxId is never reused once committed (MassTransit draws a new one), so no
            -- message can arrive for an outbox after its last one was removed.
            DELETE FROM %3$s s
            WHERE s."OutboxId" = ANY(outboxes)
              AND NOT EXISTS (SELECT 1 FROM %2$s m WHERE m."OutboxId" = s."OutboxId");
            RETURN NULL;
        END
        $body$ $f$, remove, target, state);
    -- The guard: a bus outbox message deleted by anyone but the removal above. Records who, and
    -- never fails the deleting transaction (MassTransit would deliver its messages again forever).
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION outbox.%I() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
        DECLARE
            gone bigint;
        BEGIN
            IF current_setting('outbox_relay.removing', true) = 'on' THEN
                RETURN NULL;
            END IF;
            SELECT count(*) INTO gone FROM gone_messages WHERE "OutboxId" IS NOT NULL;
            IF gone = 0 THEN
                RETURN NULL;
            END IF;
            BEGIN
                INSERT INTO outbox.adoption_conflicts AS c
                    (table_name, usename, application_name, client_addr, rows)
                VALUES (%L, session_user, coalesce(current_setting('application_name', true), ''),
                        coalesce(host(inet_client_addr()), 'local'), gone)
                ON CONFLICT (table_name, usename, application_name, client_addr)
                DO UPDATE SET rows = c.rows + excluded.rows, last_seen = now();
            EXCEPTION WHEN OTHERS THEN
                RAISE WARNING 'outbox-relay: could not record a delete of %% bus outbox messages of %%: %%',
                    gone, %L, SQLERRM;
            END;
            RETURN NULL;
        END
        $body$ $f$, conflict, target::text, target::text);
    EXECUTE format('REVOKE ALL ON FUNCTION outbox.%I() FROM PUBLIC', capture);
    EXECUTE format('REVOKE ALL ON FUNCTION outbox.%I() FROM PUBLIC', remove);
    EXECUTE format('REVOKE ALL ON FUNCTION outbox.%I() FROM PUBLIC', conflict);
    EXECUTE format('COMMENT ON FUNCTION outbox.%I() IS %L', capture,
                   format('outbox-relay adoption (masstransit): copies bus outbox messages of %s into outbox.events', target));
    -- Created once: a later run only replaces the functions, and so takes no lock on the tables.
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = target AND tgname = 'outbox_adopt_capture') THEN
        EXECUTE format('CREATE TRIGGER outbox_adopt_capture AFTER INSERT ON %s '
                       'REFERENCING NEW TABLE AS new_messages FOR EACH STATEMENT EXECUTE FUNCTION outbox.%I()',
                       target, capture);
        done := done || format('capture trigger installed on %s', target);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = target AND tgname = 'outbox_adopt_conflict') THEN
        EXECUTE format('CREATE TRIGGER outbox_adopt_conflict AFTER DELETE ON %s '
                       'REFERENCING OLD TABLE AS gone_messages FOR EACH STATEMENT EXECUTE FUNCTION outbox.%I()',
                       target, conflict);
        done := done || format('guard against MassTransit''s delivery service installed on %s', target);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'outbox.events'::regclass
                                              AND tgname = 'outbox_' || remove || '_delivered') THEN
        EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON outbox.events '
                       'REFERENCING OLD TABLE AS old_events NEW TABLE AS new_events '
                       'FOR EACH STATEMENT EXECUTE FUNCTION outbox.%I()', 'outbox_' || remove || '_delivered', remove);
        EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON outbox.events '
                       'REFERENCING OLD TABLE AS old_events '
                       'FOR EACH STATEMENT EXECUTE FUNCTION outbox.%I()', 'outbox_' || remove || '_deleted', remove);
        done := done || format('removal after delivery installed on outbox.events for %s', target);
    END IF;
    -- Before the removal after delivery, the capture moved the messages and a trigger on
    -- OutboxState removed the state at commit: gone on upgrade (dropping it needs the table's owner).
    IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = state AND tgname = 'outbox_adopt_forget') THEN
        EXECUTE format('DROP TRIGGER outbox_adopt_forget ON %s', state);
        done := done || format('old cleanup trigger dropped from %s', state);
    END IF;
    IF to_regprocedure(format('outbox.%I()', 'adopt_forget_' || hash)) IS NOT NULL THEN
        EXECUTE format('DROP FUNCTION outbox.%I()', 'adopt_forget_' || hash);
    END IF;
    IF cardinality(done) = 0 THEN
        RETURN format('capture trigger on %s, removal after delivery and guard up to date', target);
    END IF;
    RETURN array_to_string(done, ', ');
END
$$;

REVOKE ALL ON FUNCTION outbox.adopt_masstransit(text) FROM PUBLIC;
COMMIT;
