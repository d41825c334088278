-- Parks events that were claimed but neither delivered nor failed: held back behind an earlier
-- event of their key, refused for now by the broker, not sent, or routed to a sink that is down.
-- The claim's floor has passed them, so they become deferred events, due when the latest thing
-- they wait for is: their key's latest earlier deferred event, their delay (a sink that is down is
-- tried again then), or at once. No attempt is used.
-- $1: ids
-- $2: delay of each id in milliseconds (0: no delay of its own)
-- $3: the lanes whose locks this session holds (NULL: all of them)
UPDATE outbox.events e
SET available_at = greatest(
        (SELECT max(d.available_at) FROM outbox.events d
         WHERE d.key = e.key AND d.id < e.id
           AND d.delivered_at IS NULL AND d.dead_lettered_at IS NULL
           AND d.available_at > d.created_at),
        now() + p.delay_ms * interval '1 millisecond',
        e.available_at,
        e.created_at + interval '1 microsecond')
FROM unnest($1::bigint[], $2::bigint[]) AS p(id, delay_ms)
WHERE e.id = ANY($1::bigint[]) AND e.id = p.id
  AND e.delivered_at IS NULL AND e.dead_lettered_at IS NULL
  -- The fence: only events of the lanes whose locks this session holds (NULL: all of them).
  AND outbox.in_lanes(e.key, e.id, $3::integer[])
