-- The claim at a steady rate: what committed since the last claim, when that claim took every
-- event it saw (its cursor is `complete`, see claim.sql) and no event is deferred. Every event that
-- committed since a snapshot was written by a transaction that snapshot saw in progress or that
-- started after it, so it is found by its txid alone: one lookup per watched transaction and one
-- range of the txid index, never the floor. This statement is planned once per session (see
-- session_settings.sql), where claim.sql is planned afresh at each call (about 1 ms of backend
-- CPU: most of a claim's cost at 1,000 events/s); every read here stays on an index whatever
-- the planner is told of the parameters (the range is closed by this snapshot's xmax: an open
-- range without its value may be estimated at a third of the table and read by a sequential scan).
-- Same parameters and columns as claim.sql (the floor, $2, is only carried on), plus `deferred`.
-- The lane fence ($7) is a line of its own in each part that reads or writes events; a session
-- that holds every lane prepares the statement with each of those lines reduced to `$7 IS NULL`
-- (src/outbox/session/claim.rs): their expressions were a fifth of each call's cost.
-- It takes nothing and says `deferred` when an event is deferred (a retry, a schedule, a parked
-- event): claim.sql, which reads due events and holds back their keys, runs instead. Acknowledged
-- ids ($9, $10) are recorded either way. When more committed than the batch takes, the cursor
-- stays (not `advanced`) and claim.sql reads on from it.
WITH snap AS MATERIALIZED (
    SELECT pg_current_snapshot() AS s
), deferred AS MATERIALIZED (
    -- One probe of the (nearly always empty) index of deferred events; `ORDER BY ... LIMIT 1`
    -- keeps it there: an EXISTS may be planned as a sequential scan that stops at the first
    -- match, and reads the whole table when there is none.
    SELECT (SELECT available_at FROM outbox.events
            WHERE delivered_at IS NULL AND dead_lettered_at IS NULL AND available_at > created_at
            ORDER BY available_at LIMIT 1) IS NOT NULL AS found
), committed AS MATERIALIZED (
    -- One more than the batch: whether this claim took everything.
    SELECT id, key, payload_bytes FROM (
        SELECT e.id, e.key, e.payload_bytes
        FROM unnest($3::text[]::xid8[]) AS w(txid)
        CROSS JOIN LATERAL (
            SELECT id, key, octet_length(payload) AS payload_bytes
            FROM outbox.events
            WHERE txid = w.txid AND delivered_at IS NULL AND dead_lettered_at IS NULL
            OFFSET 0
        ) e
        UNION ALL
        SELECT id, key, octet_length(payload) AS payload_bytes
        FROM outbox.events
        WHERE txid >= $8::text::xid8 AND txid < (SELECT pg_snapshot_xmax(s) FROM snap)
          AND delivered_at IS NULL AND dead_lettered_at IS NULL
    ) watched
    WHERE id <> ALL($4::bigint[])
      AND ($7::integer[] IS NULL OR outbox.in_lanes(key, id + 0, $7::integer[]))
      AND NOT (SELECT found FROM deferred)
    ORDER BY id
    LIMIT $1::bigint + 1
), delivered AS (
    -- As in claim.sql.
    UPDATE outbox.events SET delivered_at = now()
    WHERE id = ANY(ARRAY(SELECT unnest($9::bigint[]))) AND delivered_at IS NULL
      AND ($7::integer[] IS NULL OR outbox.in_lanes(key, id, $7::integer[]))
    RETURNING id
), deleted AS (
    DELETE FROM outbox.events
    WHERE id = ANY(ARRAY(SELECT unnest($10::bigint[]))) AND delivered_at IS NULL
      AND ($7::integer[] IS NULL OR outbox.in_lanes(key, id, $7::integer[]))
), kept AS MATERIALIZED (
    -- The batch size and byte budget, in id order, as in claim.sql.
    SELECT id FROM (
        SELECT c.id, c.payload_bytes, row_number() OVER (ORDER BY c.id) AS n,
               sum(least(c.payload_bytes, $6::bigint + 1)) OVER (ORDER BY c.id) AS running
        FROM committed c
    ) sized
    WHERE n <= $1::bigint
      AND (running - least(payload_bytes, $6::bigint + 1) = 0 OR running <= $5::bigint)
), cursor AS MATERIALIZED (
    SELECT
        NOT (SELECT found FROM deferred)
            AND NOT EXISTS (SELECT 1 FROM committed WHERE id NOT IN (SELECT id FROM kept))
            AS advanced,
        -- Everything at or above the old floor that this snapshot sees is taken (or in flight).
        greatest($2, (SELECT max(id) + 1 FROM kept)) AS next_floor,
        ARRAY(SELECT pg_snapshot_xip(s)::text) AS next_xip,
        pg_snapshot_xmax(s)::text AS next_xmax,
        0::bigint AS parked,
        NOT (SELECT found FROM deferred)
            AND NOT EXISTS (SELECT 1 FROM committed WHERE id NOT IN (SELECT id FROM kept))
            AS complete,
        (SELECT found FROM deferred) AS deferred
    FROM snap
)
SELECT cursor.*, e.id, e.topic, e.key,
       CASE WHEN octet_length(e.payload) <= $6::bigint THEN e.payload END AS payload,
       octet_length(e.payload) AS payload_bytes,
       e.headers, e.message_id, e.created_at, e.attempts
FROM cursor
LEFT JOIN outbox.events e ON e.id = ANY(ARRAY(SELECT id FROM kept))
ORDER BY e.id
