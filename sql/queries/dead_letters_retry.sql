-- Puts dead letters back for delivery with fresh attempts. $1: ids, or NULL for all.
UPDATE outbox.events SET dead_lettered_at = NULL, attempts = 0, available_at = now()
WHERE dead_lettered_at IS NOT NULL AND ($1::bigint[] IS NULL OR id = ANY($1::bigint[]))
RETURNING id
