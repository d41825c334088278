-- $1: ids the broker acknowledged, marked delivered
-- $2: the lanes whose locks this session holds (NULL: all of them)
-- $3: ids the broker acknowledged, deleted instead (OUTBOX_RETENTION_SECS=0); the relay fills
--     either $1 or $3, the other is empty
-- (A batch recorded with the next claim is marked or deleted by sql/queries/claim.sql's
-- `delivered` and `deleted`, alike.)
WITH deleted AS (
    DELETE FROM outbox.events
    WHERE id = ANY($3::bigint[]) AND delivered_at IS NULL
      AND ($2::integer[] IS NULL OR outbox.in_lanes(key, id, $2::integer[]))
)
UPDATE outbox.events SET delivered_at = now()
WHERE id = ANY($1::bigint[]) AND delivered_at IS NULL
  -- The fence: only events of the lanes whose locks this session holds (NULL: all of them).
  AND ($2::integer[] IS NULL OR outbox.in_lanes(key, id, $2::integer[]))
