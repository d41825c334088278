-- $1: ids the broker acknowledged
UPDATE outbox.events SET delivered_at = now()
WHERE id = ANY($1::bigint[]) AND delivered_at IS NULL
  -- The fence: only events of lanes this session still owns (see 0004_lanes.sql).
  AND outbox.lane_of(key, id) = ANY((SELECT outbox.owned_lanes())::integer[])
