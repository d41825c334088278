-- Counts one attempt per failed event and either defers it by its backoff delay or, at the attempt
-- limit or for a permanent error, dead-letters it.
-- $1 ids, $2 errors, $3 retry delays in ms, $4 permanent flags, $5 attempt limit,
-- $6 the lanes whose locks this session holds (NULL: all of them)
UPDATE outbox.events e SET
    attempts = e.attempts + 1,
    last_error = f.error,
    available_at = CASE WHEN f.permanent OR e.attempts + 1 >= $5 THEN e.available_at
                        -- Later than created_at even at no delay: a deferred event.
                        ELSE greatest(now() + f.delay_ms * interval '1 millisecond',
                                      e.created_at + interval '1 microsecond') END,
    dead_lettered_at = CASE WHEN f.permanent OR e.attempts + 1 >= $5 THEN now() END
FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bool[]) AS f(id, error, delay_ms, permanent)
WHERE e.id = f.id AND e.delivered_at IS NULL AND e.dead_lettered_at IS NULL
  -- The fence: only events of the lanes whose locks this session holds (NULL: all of them).
  AND outbox.in_lanes(e.key, e.id, $6::integer[])
RETURNING e.id, e.attempts, e.dead_lettered_at IS NOT NULL AS dead_lettered
