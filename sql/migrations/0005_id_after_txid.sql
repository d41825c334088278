-- outbox-relay migration 0005: an event's transaction id is assigned before its id is taken.
-- The claim reads new events from a floor id and finds a transaction that commits late below the
-- floor through the in-progress list of its snapshot (see 0002). That works only for a transaction
-- that already had its transaction id when it took the event's id: with an identity column, an
-- insert takes the id (nextval) first and its txid default assigns the transaction id after it, so
-- a writer descheduled in between (milliseconds on a loaded machine) could commit below a floor
-- that had passed it while it was in nobody's in-progress list; its event then waited for the
-- relay's periodic rescan (up to 60 s). Now the id comes from outbox.next_event_id(), which assigns
-- the transaction id first: any transaction with an id below the floor was in progress (and so
-- watched) or committed (and so read) when the floor passed it.
-- `id` stays a bigint primary key from the same sequence values; only GENERATED ALWAYS goes (a
-- column with a default of its own cannot be an identity column). The writer role still cannot
-- set it (its INSERT grant names the writer columns only). ALTER TABLE locks the table for a
-- moment, without a rewrite. Idempotent; a DBA may apply it with `psql -v ON_ERROR_STOP=1 -f`.
BEGIN;
SELECT pg_advisory_xact_lock(7340010001);

-- The identity's sequence goes with the identity: keep its position in a plain sequence, so no id
-- is handed out twice (ids of rolled-back inserts or purged events included).
DO $$
DECLARE
    identity_sequence text := pg_get_serial_sequence('outbox.events', 'id');
    last_value bigint;
    is_called boolean;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_attribute
               WHERE attrelid = 'outbox.events'::regclass AND attname = 'id'
                 AND attidentity <> '') THEN
        EXECUTE format('SELECT last_value, is_called FROM %s', identity_sequence)
            INTO last_value, is_called;
        ALTER TABLE outbox.events ALTER COLUMN id DROP IDENTITY;
        CREATE SEQUENCE outbox.events_id_seq AS bigint OWNED BY outbox.events.id;
        PERFORM setval('outbox.events_id_seq', last_value, is_called);
    END IF;
END
$$;

-- With its owner's rights, so that inserting needs no grant on the sequence (as with the identity);
-- a fixed search_path keeps callers from substituting objects.
CREATE OR REPLACE FUNCTION outbox.next_event_id() RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_current_xact_id();
    RETURN nextval('outbox.events_id_seq');
END
$$;

ALTER TABLE outbox.events ALTER COLUMN id SET DEFAULT outbox.next_event_id();

INSERT INTO outbox.schema_migrations (version, name) VALUES (5, 'id_after_txid') ON CONFLICT DO NOTHING;
COMMIT;
