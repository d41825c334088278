-- Parks events that were claimed but neither delivered nor failed: held back behind an earlier
-- event of their key, refused for now by the broker, or not sent. The claim's floor has passed
-- them, so they become deferred events, due when the earliest thing they wait for is: their key's
-- latest earlier deferred event, or at once.
-- $1: ids
UPDATE outbox.events e
SET available_at = greatest(
        (SELECT max(d.available_at) FROM outbox.events d
         WHERE d.key = e.key AND d.id < e.id
           AND d.delivered_at IS NULL AND d.dead_lettered_at IS NULL
           AND d.available_at > d.created_at),
        now(),
        e.available_at,
        e.created_at + interval '1 microsecond')
WHERE e.id = ANY($1::bigint[]) AND e.delivered_at IS NULL AND e.dead_lettered_at IS NULL
