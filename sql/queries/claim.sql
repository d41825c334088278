-- The next events to publish, in id order, and the cursor for the claim after this one.
-- Reads only what is new or due, never the delivered history (see docs/guarantees.md, "The claim on a busy database"):
--   fresh: undelivered events from the floor id on;
--   late:  events below the floor whose transaction was in progress when an earlier claim passed
--          them: their txid is in that claim's snapshot's in-progress list, or at or above its
--          xmax (PostgreSQL lists only transactions below xmax; one that started after the last
--          completed one is in progress without being listed);
--   due:   deferred events (retries, schedules, parked events) whose time has come.
-- Per-key order: an event waits while an earlier event of its key is deferred and not part of this
-- claim. Such an event is parked (deferred to its blocker's time) in this same statement, so the
-- floor can move past it and it comes back as a due event.
-- $1: batch size
-- $2: floor id
-- $3: watched in-progress txids (xid8 as text)
-- $4: ids not to be claimed: in flight (claimed, not yet recorded) and those $9 marks
-- $5: byte budget of the batch's payloads (the first event is always taken)
-- $6: largest payload published; a larger one is not even read (payload NULL, payload_bytes set)
-- $7: the lanes this session holds the locks of, sorted (see 0004_lanes.sql and, for
--     outbox.in_lanes, 0005_lane_index.sql); NULL when it holds all of them. Only their events are
--     claimed. Only `fresh` reads through the lane column of the pending index: elsewhere
--     `id + 0` keeps the planner off it (for `due` it would read every pending event of the
--     lanes to find the few deferred ones). `$7 IS NULL OR` before each test: PostgreSQL
--     inlines in_lanes (and lane_of twice in it) anew at every plan; a session that holds every
--     lane skips that work, ~0.5 ms of the claim's ~1.3 ms of planning (EXPLAIN, 20k events).
-- $8: the xmax of the last claim's snapshot (xid8 as text; NULL before the first claim): every
--     transaction from it on is watched too
-- $9: ids the broker acknowledged (the previous batch), marked delivered by this statement, with
--     the same fence as sql/queries/mark_delivered.sql: one round trip per batch, not two
-- $10: ids the broker acknowledged, deleted instead (OUTBOX_RETENTION_SECS=0); the relay fills
--     either $9 or $10, the other is empty
-- One row per event, ordered by id; the cursor columns (and `complete`) repeat on every row. With no event, one row
-- whose event columns are NULL.
WITH snap AS MATERIALIZED (
    SELECT pg_current_snapshot() AS s
), skipped AS MATERIALIZED (
    -- $4 as rows: `NOT IN (SELECT id FROM skipped)` is one hashed lookup per row, like
    -- `<> ALL($4)`, but the planner does not estimate each of its up to 1,000 ids at each use
    -- (+1.3 ms of planning per claim, EXPLAIN).
    SELECT unnest($4::bigint[]) AS id
), late AS MATERIALIZED (
    -- One lookup per watched transaction through the txid index (`OFFSET 0` keeps it a lookup,
    -- never a join over every pending event; `id + 0` keeps the planner off the id index, below
    -- the floor of which lies the delivered history).
    SELECT id, key, payload_bytes FROM (
        SELECT e.id, e.key, e.available_at, e.created_at, e.payload_bytes
        FROM unnest($3::text[]::xid8[]) AS w(txid)
        CROSS JOIN LATERAL (
            SELECT id, key, available_at, created_at, octet_length(payload) AS payload_bytes
            FROM outbox.events
            WHERE txid = w.txid AND delivered_at IS NULL AND dead_lettered_at IS NULL
            OFFSET 0
        ) e
        UNION ALL
        -- Transactions from the last snapshot's xmax on, through the same index: the events
        -- written since (mostly above the floor, where `fresh` reads them).
        SELECT id, key, available_at, created_at, octet_length(payload) AS payload_bytes
        FROM outbox.events
        WHERE txid >= $8::text::xid8 AND delivered_at IS NULL AND dead_lettered_at IS NULL
    ) watched
    WHERE id + 0 < $2 AND available_at <= created_at AND id NOT IN (SELECT id FROM skipped)
      AND ($7::integer[] IS NULL OR outbox.in_lanes(key, id + 0, $7::integer[]))
    ORDER BY id
    LIMIT $1
), fresh AS MATERIALIZED (
    -- Each part reads what the rest of the claim needs, so no event is looked up twice. No
    -- payload yet: octet_length reads the TOAST pointer, not the value.
    SELECT id, key, octet_length(payload) AS payload_bytes FROM outbox.events
    WHERE id >= $2 AND delivered_at IS NULL AND dead_lettered_at IS NULL
      AND available_at <= created_at AND id NOT IN (SELECT id FROM skipped)
      AND ($7::integer[] IS NULL OR outbox.in_lanes(key, id, $7::integer[]))
    ORDER BY id
    -- Late events fill the batch: the floor and the watched transactions stay as they are.
    LIMIT (SELECT CASE WHEN count(*) < $1 THEN $1 ELSE 0 END FROM late)
), due AS MATERIALIZED (
    -- Earliest due first, through the index on available_at: however many events are
    -- scheduled for later, only the due ones are read. Ties (events parked by one statement
    -- share a time) go in id order, so that a key's earlier event is never cut off by the LIMIT
    -- while its later one is taken: that later one would be parked behind it at the same time,
    -- over and over.
    SELECT id, key, octet_length(payload) AS payload_bytes FROM outbox.events
    WHERE delivered_at IS NULL AND dead_lettered_at IS NULL
      AND available_at > created_at AND available_at <= now()
      AND id NOT IN (SELECT id FROM skipped)
      AND ($7::integer[] IS NULL OR outbox.in_lanes(key, id + 0, $7::integer[]))
    ORDER BY available_at, id
    LIMIT $1
), candidates AS MATERIALIZED (
    SELECT * FROM late UNION ALL SELECT * FROM fresh UNION ALL SELECT * FROM due
), blocked AS MATERIALIZED (
    SELECT c.id, b.until
    FROM candidates c
    CROSS JOIN LATERAL (
        -- The nearest earlier deferred event of the key, through the (key, id) index.
        SELECT d.available_at AS until FROM outbox.events d
        WHERE d.key = c.key AND d.id < c.id
          AND d.delivered_at IS NULL AND d.dead_lettered_at IS NULL
          AND d.available_at > d.created_at AND d.id NOT IN (SELECT id FROM due)
        ORDER BY d.id DESC
        LIMIT 1
    ) b
    WHERE c.key IS NOT NULL
      -- Most of the time no event is deferred at all: one probe instead of one per candidate
      -- (`ORDER BY ... LIMIT 1` keeps it on the index of deferred events).
      AND (SELECT available_at FROM outbox.events
           WHERE delivered_at IS NULL AND dead_lettered_at IS NULL AND available_at > created_at
           ORDER BY available_at LIMIT 1) IS NOT NULL
), parked AS (
    UPDATE outbox.events e
    SET available_at = greatest((SELECT b.until FROM blocked b WHERE b.id = e.id),
                                e.available_at, e.created_at + interval '1 microsecond')
    -- `= ANY(ARRAY(...))`: primary-key lookups, never a join that reads the table (also below).
    WHERE e.id = ANY(ARRAY(SELECT id FROM blocked))
    RETURNING e.id
), delivered AS (
    -- Runs whether or not it is read. Its rows are not claimed (they are in $4) and, in this
    -- statement's snapshot, still undelivered: the reads above exclude them by id.
    UPDATE outbox.events SET delivered_at = now()
    WHERE id = ANY(ARRAY(SELECT unnest($9::bigint[]))) AND delivered_at IS NULL
      AND ($7::integer[] IS NULL OR outbox.in_lanes(key, id, $7::integer[]))
    RETURNING id
), deleted AS (
    -- As `delivered`, for a relay that keeps no delivered history: one DELETE writes a fraction
    -- of what an UPDATE (a new row version and primary-key entry) and the purge's later DELETE
    -- write (make bench, the claim alone recording 200k events: 119,652/s deleting, 80,079 marking).
    DELETE FROM outbox.events
    WHERE id = ANY(ARRAY(SELECT unnest($10::bigint[]))) AND delivered_at IS NULL
      AND ($7::integer[] IS NULL OR outbox.in_lanes(key, id, $7::integer[]))
), kept AS MATERIALIZED (
    -- The byte budget, in id order; what does not fit comes in the next batch.
    SELECT id FROM (
        SELECT c.id, c.payload_bytes,
               sum(least(c.payload_bytes, $6::bigint + 1)) OVER (ORDER BY c.id) AS running
        FROM candidates c
        WHERE c.id NOT IN (SELECT id FROM blocked)
    ) sized
    WHERE running - least(payload_bytes, $6::bigint + 1) = 0 OR running <= $5::bigint
), cursor AS MATERIALIZED (
    SELECT
        -- The floor and the watched transactions move on only when every late event was taken.
        (SELECT count(*) FROM late) < $1
            AND NOT EXISTS (SELECT 1 FROM late WHERE id NOT IN (SELECT id FROM kept)
                                                 AND id NOT IN (SELECT id FROM blocked)) AS advanced,
        coalesce((SELECT min(id) FROM fresh WHERE id NOT IN (SELECT id FROM kept)
                                             AND id NOT IN (SELECT id FROM blocked)),
                 (SELECT max(id) + 1 FROM fresh), $2) AS next_floor,
        ARRAY(SELECT pg_snapshot_xip(s)::text) AS next_xip,
        pg_snapshot_xmax(s)::text AS next_xmax,
        (SELECT count(*) FROM parked) AS parked,
        -- This claim took every event it saw: none left by the batch's limits, none deferred
        -- (due, parked or for later). The next claim may then read only what committed since
        -- (sql/queries/claim_steady.sql). Read only when the cursor advanced.
        (SELECT count(*) FROM fresh) < $1
            AND NOT EXISTS (SELECT 1 FROM fresh WHERE id NOT IN (SELECT id FROM kept))
            AND (SELECT available_at FROM outbox.events
                 WHERE delivered_at IS NULL AND dead_lettered_at IS NULL
                   AND available_at > created_at
                 ORDER BY available_at LIMIT 1) IS NULL AS complete
    FROM snap
)
SELECT cursor.*, e.id, e.topic, e.key,
       CASE WHEN octet_length(e.payload) <= $6::bigint THEN e.payload END AS payload,
       octet_length(e.payload) AS payload_bytes,
       e.headers, e.message_id, e.created_at, e.attempts
FROM cursor
LEFT JOIN outbox.events e ON e.id = ANY(ARRAY(SELECT id FROM kept))
ORDER BY e.id
