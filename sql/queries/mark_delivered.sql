-- $1: ids the broker acknowledged
UPDATE outbox.events SET delivered_at = now()
WHERE id = ANY($1::bigint[]) AND delivered_at IS NULL
