-- The metrics sampler's count of the backlog of the lanes this replica owns, read from its claim
-- floor so that it stays cheap however much delivered history a long transaction keeps alive:
-- undelivered events from the floor on that are not deferred, plus every deferred one (retries,
-- schedules, parked) through its own index, and the dead letters. Events below the floor that the
-- next claim picks up as late commits are not counted (at most a batch or so). Summed over the
-- replicas, every lane is counted once. It reads every pending row (~1-3 us each), so the sampler
-- runs it less often on a large backlog; sql/queries/lag.sql is cheap and runs every time.
-- $1: claim floor
-- $2: the lanes this replica owns
SELECT
    -- ORDER BY ... LIMIT: read through the index from the floor (and, below, the dead-letter
    -- index), whatever the planner's statistics say about a young table. `id + 0`: deferred
    -- events are read through their own index, not the pending index's lane column.
    (SELECT count(*) FROM (SELECT 1 FROM outbox.events
      WHERE id >= $1 AND delivered_at IS NULL AND dead_lettered_at IS NULL
        AND available_at <= created_at AND outbox.in_lanes(key, id, $2::integer[])
      ORDER BY id LIMIT 1000000000) fresh)
  + (SELECT count(*) FROM outbox.events
      WHERE delivered_at IS NULL AND dead_lettered_at IS NULL
        AND available_at > created_at AND outbox.in_lanes(key, id + 0, $2::integer[])) AS pending,
    (SELECT count(*) FROM (SELECT 1 FROM outbox.events WHERE dead_lettered_at IS NOT NULL
        AND outbox.in_lanes(key, id + 0, $2::integer[])
      ORDER BY dead_lettered_at LIMIT 1000000000) dead) AS dead_letters
