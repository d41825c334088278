-- Pending count, lag (age of the oldest deliverable event, 0 when none) and dead-letter count.
SELECT
    (SELECT count(*) FROM outbox.events
      WHERE delivered_at IS NULL AND dead_lettered_at IS NULL) AS pending,
    coalesce((SELECT extract(epoch FROM now() - created_at)::float8 FROM outbox.events
      WHERE delivered_at IS NULL AND dead_lettered_at IS NULL AND available_at <= now()
      ORDER BY id LIMIT 1), 0)::float8 AS lag_seconds,
    (SELECT count(*) FROM outbox.events WHERE dead_lettered_at IS NOT NULL) AS dead_letters
