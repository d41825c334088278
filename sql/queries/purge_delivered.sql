-- Deletes the events delivered more than $1 seconds ago among the ids [$2, $2 + $3), and says
-- whether that window still holds events delivered too recently to delete. The purge walks the
-- table window by window from its oldest id, so no statement reads the history a long
-- transaction elsewhere keeps alive, holds many row locks, or runs long.
-- $1: retention in seconds, $2: window start id, $3: window size
WITH doomed AS (
    SELECT id FROM outbox.events
    WHERE id >= $2 AND id < $2 + $3
      AND delivered_at < now() - $1 * interval '1 second'
    FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM outbox.events e USING doomed WHERE e.id = doomed.id RETURNING e.id
)
SELECT
    (SELECT count(*) FROM deleted) AS deleted,
    EXISTS (SELECT 1 FROM outbox.events
            WHERE id >= $2 AND id < $2 + $3
              AND delivered_at >= now() - $1 * interval '1 second') AS too_recent,
    coalesce((SELECT max(id) FROM outbox.events), 0) AS last_id
