-- The metrics sampler's lag of the lanes this replica owns: the age of the oldest deliverable
-- undelivered event, 0 when none. Two index probes, read from the claim floor like
-- sql/queries/backlog.sql (`id + 0`: deferred events through their own index).
-- $1: claim floor
-- $2: the lanes this replica owns
SELECT coalesce(extract(epoch FROM now() - least(
    (SELECT created_at FROM outbox.events
      WHERE id >= $1 AND delivered_at IS NULL AND dead_lettered_at IS NULL
        AND available_at <= created_at
        AND ($2::integer[] IS NULL OR outbox.in_lanes(key, id, $2::integer[]))
      ORDER BY id LIMIT 1),
    (SELECT min(created_at) FROM outbox.events
      WHERE delivered_at IS NULL AND dead_lettered_at IS NULL
        AND available_at > created_at AND available_at <= now()
        AND ($2::integer[] IS NULL OR outbox.in_lanes(key, id + 0, $2::integer[])))
    )), 0)::float8 AS lag_seconds
