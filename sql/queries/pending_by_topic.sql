-- Pending events and lag per topic, for `status` to add up per sink through the routes.
-- Reads every undelivered row, as stats.sql does.
SELECT topic,
       count(*) AS pending,
       coalesce(extract(epoch FROM now() - min(created_at) FILTER (WHERE available_at <= now())),
                0)::float8 AS lag_seconds
FROM outbox.events
WHERE delivered_at IS NULL AND dead_lettered_at IS NULL
GROUP BY topic
