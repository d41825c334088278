-- The metrics sampler's view of the backlog, read from the active relay's claim floor so that it
-- stays cheap however much delivered history a long transaction keeps alive: undelivered events
-- from the floor on, plus deferred ones (retries, schedules, parked) anywhere. Events below the
-- floor that the next claim picks up as late commits are not counted (at most a batch or so).
-- $1: claim floor
SELECT
    (SELECT count(*) FROM outbox.events
      WHERE id >= $1 AND delivered_at IS NULL AND dead_lettered_at IS NULL)
  + (SELECT count(*) FROM outbox.events
      WHERE id + 0 < $1 AND delivered_at IS NULL AND dead_lettered_at IS NULL
        AND available_at > created_at) AS pending,
    coalesce(extract(epoch FROM now() - least(
        (SELECT created_at FROM outbox.events
          WHERE id >= $1 AND delivered_at IS NULL AND dead_lettered_at IS NULL
            AND available_at <= created_at
          ORDER BY id LIMIT 1),
        (SELECT min(created_at) FROM outbox.events
          WHERE delivered_at IS NULL AND dead_lettered_at IS NULL
            AND available_at > created_at AND available_at <= now()))), 0)::float8 AS lag_seconds,
    (SELECT count(*) FROM outbox.events WHERE dead_lettered_at IS NOT NULL) AS dead_letters
