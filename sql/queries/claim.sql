-- The next deliverable events in insertion order. An event waits while an earlier event of its key
-- is deferred to a later time (a retry or a schedule), so per-key order holds across retries.
-- No cursor: every undelivered row is seen again on the next claim, so a transaction that commits
-- after a higher id was delivered is never skipped.
-- $1: batch size
-- $2: ids of the batch in flight, published but not yet recorded, so not claimed again
WITH deferred AS (
    SELECT key, min(id) AS first_id
    FROM outbox.events
    WHERE delivered_at IS NULL AND dead_lettered_at IS NULL
      AND available_at > created_at AND available_at > now() AND key IS NOT NULL
    GROUP BY key
)
SELECT e.id, e.topic, e.key, e.payload, e.headers, e.message_id, e.created_at, e.attempts
FROM outbox.events e
WHERE e.delivered_at IS NULL AND e.dead_lettered_at IS NULL AND e.available_at <= now()
  AND e.id <> ALL($2::bigint[])
  AND NOT EXISTS (SELECT 1 FROM deferred d WHERE d.key = e.key AND d.first_id < e.id)
ORDER BY e.id
LIMIT $1
