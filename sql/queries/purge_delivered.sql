-- Deletes one small batch of events delivered more than $1 seconds ago, oldest ids first, so no
-- statement holds many row locks or runs long. $1: retention in seconds, $2: batch size.
WITH doomed AS (
    SELECT id FROM outbox.events
    WHERE delivered_at IS NOT NULL AND delivered_at < now() - $1 * interval '1 second'
    ORDER BY id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
DELETE FROM outbox.events e USING doomed WHERE e.id = doomed.id
