-- $1: ids the broker acknowledged
-- (A batch recorded with the next claim is marked by sql/queries/claim.sql's `delivered`, alike.)
-- $2: the lanes whose locks this session holds (NULL: all of them)
UPDATE outbox.events SET delivered_at = now()
WHERE id = ANY($1::bigint[]) AND delivered_at IS NULL
  -- The fence: only events of the lanes whose locks this session holds (NULL: all of them).
  AND ($2::integer[] IS NULL OR outbox.in_lanes(key, id, $2::integer[]))
