-- Deletes dead letters for good. $1: ids, or NULL for all.
DELETE FROM outbox.events
WHERE dead_lettered_at IS NOT NULL AND ($1::bigint[] IS NULL OR id = ANY($1::bigint[]))
RETURNING id
